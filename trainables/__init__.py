"""What is trained: PyTorch data, models, training tricks, the shared loop and the sanity checks.

Modules, imported on use (the tuner core reads `knobs` without importing torch):
  knobs   every knob's default and allowed values
  data    digits, IDX, npz, csv loaders with fixed splits
  models  mlp, cnn
  tricks  init schemes, optimizers, lr schedules, clipping
  train   the loop (`fit`) and the Ray Tune function trainable (`builtin_trainable`)
  checks  loss at init, input-independent baseline, overfit one batch
"""
