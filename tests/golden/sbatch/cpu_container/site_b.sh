# factory render refuses this: training.container: local site B has no known container runtime (runtimes: none in <repo>/sites/site_b.yaml); use environment instead
