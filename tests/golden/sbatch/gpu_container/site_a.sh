# factory render refuses this: training.container: local site A has no known container runtime (runtimes: none in <repo>/sites/site_a.yaml); use environment instead
# factory render refuses this: training.resources: local site A partition 'cpu' (the default) has no GPUs; 2 GPUs per node requested (partitions with GPUs: gpu)
