"""`corert build`: a Containerfile subset built into the image store, one image step per instruction.

    parser.py    Containerfile text -> Instructions (continuations, comments, exec/shell form, flags)
    words.py     docker's word rules: quotes, escapes, $VAR / ${VAR:-x} substitution
    ignore.py    .containerignore / .dockerignore patterns (docker semantics: **, ! exceptions)
    context.py   the build context: COPY/ADD sources resolved inside it, and their content digest
    layer.py     COPY/ADD/WORKDIR written into an overlay-form diff dir against the parent's merged view
    cache.py     (parent image, instruction, content digest) -> image id
    executor.py  the steps: RUN in a managed container, commits through the image store, output, tagging
"""
