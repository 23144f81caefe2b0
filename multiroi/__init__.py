"""multiroi: real-time multi-person human mesh recovery with the Multi-RoI method.

The core package. It imports with torch, numpy and OpenCV only; the applications
(``realtime``, ``export``, ``train``, ``calibration``) build on it and never the other way round.
"""

__version__ = "0.1.0"
