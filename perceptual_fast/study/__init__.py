"""The paper's workbench (Kumar et al. 2022): train classifiers, score their checkpoints, plot PS against accuracy.

Modules (import them directly; nothing is re-exported here):
  train        the classifier training loop with resumable checkpoints: ``TrainConfig``, ``train``
  train_lin    LPIPS lin weights learned on BAPPS 2AFC train data: ``train_lin``, ``save_lin``
  sweep/       many checkpoints scored on BAPPS 2AFC into one table: ``run_sweep`` (discovery, runner, results)
  plot         PS vs accuracy per swept hyperparameter, PS vs training step: ``plot_results``
  classes      labelled training images from every source: ``load_class_data``, ``synthetic_classes``
  imagenet64   the downsampled-ImageNet npz batches; class_data: ``ClassData``, the form both return
"""
