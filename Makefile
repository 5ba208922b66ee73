# The two commands a new user needs:
#   make run    the whole workflow offline on the bundled images
#   make test   every test
.PHONY: run test lint bench burst model model-reference image image-test clean

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

# 2000 uploads at once through the offline stack, then a count of lost and duplicated
# records (slow: not part of `make test`; results in docs/reliability.md)
burst:
	@scripts/bootstrap.sh
	.venv/bin/scones bench burst --images 2000

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

# The distillation teacher and the benchmark's reference: today's ensemble.
model-reference:
	@scripts/bootstrap.sh
	.venv/bin/scones train --recipe ensemble --out models/reference/ensemble-v1

clean:
	rm -rf .aws-sam .scones build
