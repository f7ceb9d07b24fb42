"""Toy GANs on 2-D points: the target distributions, their monitors and scatter pictures.

    distributions.py  the synthetic targets (gaussian, ring8, grid25) the data sources draw from
    measures.py       D's accuracy, mode coverage and moment errors (numpy/torch math, no I/O)
    plot.py           scatter of real vs generated points over D's decision surface; the GIF
    evaluate.py       `dcgan eval` of a toy run or its samples: those measures once, with a protocol
    monitor.py        the tick hook the training loop calls for point data
"""
