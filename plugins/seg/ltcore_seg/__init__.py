"""ltcore-seg: long-tailed semantic segmentation as an ltcore task plugin.

Datasets with a label per pixel (ADE20K, image-and-mask folders, the embedded digit scenes),
views that move an image and its mask together, FCN models with per-pixel classifiers, per-pixel
losses (CE, logit-adjusted CE, GML on pixel features) and mIoU / mAcc / aAcc.
"""

IGNORE = 255
"""The label of a pixel no loss or figure counts, in every mask (mmsegmentation's convention)."""
