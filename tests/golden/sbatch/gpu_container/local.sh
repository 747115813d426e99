# factory render refuses this: training.container: local cluster has no known container runtime (runtimes: none in <repo>/sites/local.yaml); use environment instead
# factory render refuses this: training.resources: local cluster partition 'cpu' (the default) has no GPUs; 2 GPUs per node requested (partitions with GPUs: gpu)
