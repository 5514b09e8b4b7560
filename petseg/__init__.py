"""petseg: pet segmentation, trained under tf.distribute and served on Apache Beam."""

__version__ = "0.1.0"
