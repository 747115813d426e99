"""The manifest of a sharded dataset folder (``operators.datasets.shards``): its file name and format id.

One home for what the packer writes, pinning looks for, a ``format: shards`` contract validates and the
jobs' fetch reads. Standard library only.
"""

MANIFEST = "manifest.json"  # one row per file: path and the shard that holds it
MANIFEST_FORMAT = "aifactory-shards/1"
