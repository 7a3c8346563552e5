"""Example wdgrid plugins (README, "Your own model"): ``small_convnet`` (a model with arguments) and
``gaussian_blobs`` (a data set generated in memory, which declares its size so that normalized weight decay works)."""
