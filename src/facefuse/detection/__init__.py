"""Face detectors (numpy, OpenCV and ONNX Runtime): the registry of detectors and their
common result (:mod:`facefuse.detection.detectors`), and the MTCNN cascade
(:mod:`facefuse.detection.mtcnn`). Below both the face pipeline (``facefuse.inference``) and
the training cache's detector crops (``facefuse.data.cache``), which use them."""
