# factory render refuses this: training.resources: MeluXina: how to ask for GPUs is not known (gpu_request.style is null in <repo>/sites/meluxina.yaml), so a GPU job cannot be rendered for it
