# factory render refuses this: training.resources: Karolina: how to ask for GPUs is not known (gpu_request.style is null in <repo>/sites/karolina.yaml), so a GPU job cannot be rendered for it
