"""Training, quantisation and export (the ``train`` extra: TensorFlow). Never imported at run time."""
