"""The engine: assembling a run from plugins and training it.

``runs`` has the entry points (:func:`~ltcore.engine.runs.prepare`, ``train``, ``resume``, the
evaluation of saved models), ``trainer`` the training loop, ``backends`` the two ways views are
made (batched on the device, per image in DataLoader workers), ``schedule`` the learning rate and
the optimiser, ``checkpoints`` what is saved and loaded. The evaluation path is
:mod:`ltcore.evaluation`.
"""
