"""Data pipelines: video clips (decord / PyAV), manifests, buckets, latent cache, video I/O.

Import submodules directly (``from tdd_video.data.video_io import write_video``); this package
file stays light so importing one part never pulls in the others.
"""
