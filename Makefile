# The two commands a new user needs:
#   make run    the whole workflow offline on the bundled images
#   make test   every test
.PHONY: run test lint bench model image image-test clean

run:
	@scripts/bootstrap.sh
	.venv/bin/scones run

test:
	@scripts/bootstrap.sh --tools
	.venv/bin/python -m pytest -n 2 --dist loadgroup

lint:
	@scripts/bootstrap.sh
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy src layers/shared functions

bench:
	@scripts/bootstrap.sh
	.venv/bin/scones bench

model:
	@scripts/bootstrap.sh
	.venv/bin/scones train

# The SageMaker serving image, without Docker (buildah + mmdebstrap; see docs/architecture.md,
# "The serving image"). Rebuilt only when its inputs change.
image:
	scripts/build_image.sh

# Build (or reuse) the image and check it: /ping and /invocations from `serve` inside it.
image-test:
	@scripts/bootstrap.sh
	.venv/bin/python -m pytest tests/serving/test_serving_container.py -n 0 -s

clean:
	rm -rf .aws-sam .scones build
