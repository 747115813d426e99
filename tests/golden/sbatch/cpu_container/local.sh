# factory render refuses this: training.container: local cluster has no known container runtime (runtimes: none in <repo>/sites/local.yaml); use environment instead
