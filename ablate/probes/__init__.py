"""Measurements on trained or initial networks: lesions, loss landscapes, shattered gradients, signal propagation.
"""
