"""What is trained: PyTorch data, models, training tricks, the shared loop and the sanity checks.

Modules, imported on use (the tuner core reads `knobs` without importing torch):
  knobs      every knob's default and allowed values
  factories  model: / data: -> factories (a built-in, or your module:function)
  data       digits, IDX, npz, csv loaders with fixed splits (loaded, a data factory)
  models     mlp, cnn (model factories)
  tricks     init schemes, dropout, optimizers, lr schedules, clipping
  pyfunc     the ensemble as an MLflow pyfunc model
  train      the loop (`fit`) and the Ray Tune function trainable (`service_trainable`)
  checks     loss at init, input-independent baseline, overfit one batch
"""
