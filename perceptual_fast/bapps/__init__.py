"""BAPPS (Zhang et al. 2018): the data set's layout, packs, synthetic sets and the evaluation on it.

Modules (import them directly; nothing is re-exported here):
  reader     list a BAPPS folder (2afc/, jnd/), items paired by file name, images decoded as used:
             ``read_bapps``, ``Bapps``, ``BappsPart`` (``batches``: decode a few batches ahead), ``ImageFiles``
  pack       decode a folder once, streamed, into a memory-mapped safetensors pack: ``pack_folder``, ``load_pack``, ``load_bapps``
  synthetic  a small SYNTHETIC set in the published layout, judgements from a stated rule: ``make_bapps``
  evaluate   per-category 2AFC, PS and JND mAP for every distance from one trunk pass: ``evaluate_bapps``
  baselines  the low-level baselines of the LPIPS paper (Lab L2/SSIM, PSNR): ``baseline_distance``
"""
