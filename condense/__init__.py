"""
The modules the root's files import and never run: the losses' speed path, the measurement's (cosines.py,
parallel.py), train.py's plumbing, Hugging Face loading, the figures and the family survey. Nothing here is
needed to read the lesson (model.py, train.py, dispersion.py, measure.py); each file says which of them it
serves.
"""
