"""What the service and the workers both stand on; imports neither of them."""
