"""Datasets: sources → canonical uint8 cache → batches on the device."""
