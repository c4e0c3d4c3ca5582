"""Ray Tune, as the study engine uses it: the only package that imports Ray.
"""
