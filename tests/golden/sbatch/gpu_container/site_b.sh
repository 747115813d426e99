# factory render refuses this: training.container: local site B has no known container runtime (runtimes: none in <repo>/sites/site_b.yaml); use environment instead
# factory render refuses this: training.resources: local site B partition 'cpu' (the default) has no GPUs; 2 GPUs per node requested (partitions with GPUs: gpu)
