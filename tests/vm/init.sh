#!/bin/sh
# Guest /init (busybox), built into the initramfs by harness.py.
# Root: the host's / over 9p (read-only) under a tmpfs overlay; cgroup2 alone at /sys/fs/cgroup with
# every controller enabled for the root's children; then /ctl/cmd.sh runs chrooted in that root.
# Its exit status goes to /ctl/rc (the host's answer); a missing rc file means the guest broke.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
die() { echo "vm-init: $*"; poweroff -f; }

# modules were put in /mods in dependency order
for m in /mods/*.ko; do insmod "$m" || die "insmod $m failed"; done

NINEP=trans=virtio,version=9p2000.L,msize=512000
mount -t 9p -o "$NINEP,cache=none" ctl /ctl || die "cannot mount the control share"
. /ctl/vm.env
mount -t 9p -o "$NINEP,ro,cache=loose" hostroot /lower || die "cannot mount the host root"
mount -t tmpfs -o size=50% tmpfs /ovl && mkdir /ovl/upper /ovl/work
mount -t overlay -o lowerdir=/lower,upperdir=/ovl/upper,workdir=/ovl/work overlay /newroot \
    || die "cannot mount the overlay root"

R=/newroot
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t cgroup2 -o nsdelegate cgroup2 $R/sys/fs/cgroup || die "cannot mount cgroup2"
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts $R/dev/pts
ln -sf pts/ptmx $R/dev/ptmx
for d in /dev/shm /tmp /run; do mount -t tmpfs tmpfs $R$d; done
chmod 1777 $R/tmp
# The kernel's own modules for modprobe inside the guest (busybox's, where the host has no kmod).
mkdir -p $R/lib/modules && mount --bind "$R$KMODDIR" $R/lib/modules
[ -e $R/sbin/modprobe ] || ln -s /bin/busybox $R/sbin/modprobe
# Read-write shares: "tag /path" lines.
while read -r tag dir; do
    [ -n "$tag" ] || continue
    mkdir -p "$R$dir" && mount -t 9p -o "$NINEP,cache=mmap" "$tag" "$R$dir" || die "cannot mount $dir"
done < /ctl/mounts
mkdir -p $R/ctl && mount --bind /ctl $R/ctl

echo "+cpu +cpuset +io +memory +pids" > $R/sys/fs/cgroup/cgroup.subtree_control \
    || die "cannot enable the cgroup v2 controllers"
hostname corert-vm
cut -d' ' -f1 /proc/uptime > /ctl/boot
chroot $R /bin/sh /ctl/cmd.sh < /dev/console > /dev/console 2>&1
echo $? > /ctl/rc
sync
poweroff -f
