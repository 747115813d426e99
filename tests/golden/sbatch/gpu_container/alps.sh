# factory render refuses this: training.launcher: Alps gives one GPU per task (--gpus-per-task): use launcher srun, one rank per task, instead of torchrun
