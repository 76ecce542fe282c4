"""The embedding API's implementation; the public surface is corert.api (and re-exported from corert).

process.py   children of this process waited for through their pidfd, stdio pipes as trio streams
events.py    the runtime's event hub and the per-container OOM watcher
container.py Container (and its exec'd processes), results
runtime.py   Runtime: images, container contexts, list, gc
"""
