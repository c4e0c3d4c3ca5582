"""The ResNet family: the registry of model axes (torch-free) and the torch modules built from it.
"""
