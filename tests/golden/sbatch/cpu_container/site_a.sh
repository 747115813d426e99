# factory render refuses this: training.container: local site A has no known container runtime (runtimes: none in <repo>/sites/site_a.yaml); use environment instead
