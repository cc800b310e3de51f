# Shorthands for dev.py, which needs nothing but Python 3.11 and pip.
PYTHON ?= python3

.PHONY: demo test
demo:
	$(PYTHON) dev.py demo
test:
	$(PYTHON) dev.py test
