# cython: language_level=3
"""pyfuse3's replies to OPENDIR, with the kernel's readdir cache turned on (see dircache.py).

This module defines `fuse_reply_open`, the libfuse function pyfuse3 calls to answer OPEN and OPENDIR.
Loaded with RTLD_GLOBAL before pyfuse3, its definition comes first in the dynamic linker's search order,
so pyfuse3's calls land here. A reply whose file handle carries the tag the daemon puts on directory
handles gets `cache_readdir` and `keep_cache` set (what pyfuse3's `opendir` gives Python no way to say);
every reply then goes to libfuse's own function.
"""

cdef extern from *:
    """
    #define FUSE_USE_VERSION 35
    #include <fuse_lowlevel.h>
    #include <dlfcn.h>
    #include <stdint.h>

    typedef int (*corert_reply_open_fn)(fuse_req_t, const struct fuse_file_info *);
    static corert_reply_open_fn corert_libfuse_reply_open;
    static uint64_t corert_dir_handle_tag;      /* 0: pass every reply through unchanged */

    /* libfuse's own fuse_reply_open: looked up in libfuse3 itself (loading it now if pyfuse3 has not
       yet; the handle is kept, so it stays loaded), never through the global scope, where we come first. */
    static int corert_resolve_reply_open(void) {
        void *lib = dlopen("libfuse3.so.3", RTLD_NOW | RTLD_LOCAL);
        if (lib == NULL)
            return -1;
        corert_libfuse_reply_open = (corert_reply_open_fn)dlsym(lib, "fuse_reply_open");
        return corert_libfuse_reply_open == NULL ? -1 : 0;
    }

    __attribute__((visibility("default")))
    int fuse_reply_open(fuse_req_t req, const struct fuse_file_info *fi) {
        if (corert_libfuse_reply_open == NULL && corert_resolve_reply_open() != 0)
            return -ENOSYS;  /* libfuse3 gone: cannot happen once pyfuse3 is loaded */
        if (corert_dir_handle_tag != 0 && (fi->fh & corert_dir_handle_tag)) {
            struct fuse_file_info dir = *fi;
            dir.cache_readdir = 1;  /* the kernel keeps the listing and answers readdir itself */
            dir.keep_cache = 1;     /* ... across opens, until the directory changes through the mount */
            return corert_libfuse_reply_open(req, &dir);
        }
        return corert_libfuse_reply_open(req, fi);
    }
    """
    int corert_resolve_reply_open()
    unsigned long long corert_dir_handle_tag


def enable(unsigned long long tag) -> None:
    """Set cache_readdir + keep_cache on every open reply whose handle has `tag` set."""
    global corert_dir_handle_tag
    if corert_resolve_reply_open() != 0:
        raise ImportError("libfuse3's fuse_reply_open not found")
    corert_dir_handle_tag = tag
