"""The local web interface (task 'serve'): upload a chest image, see probabilities and Grad-CAM."""
