# The two commands a new user needs:
#   make run    the whole workflow offline on the bundled images
#   make test   every test
# Each target sets up the environment it needs (scripts/bootstrap.sh):
#   .venv        run: the product, offline stack, serving, CLI (no torch)
#   .venv-train  .venv + torch (CPU), onnx, onnxscript: training and export
#   .venv-test   .venv-train + pytest, ruff, mypy, playwright
#   .venv-sam    aws-sam-cli (make build, make deploy)
.PHONY: run test lint bench burst model model-reference model-reference-lite2 retrain cli-reference build deploy deploy-baseline image image-test clean

run:
	@scripts/bootstrap.sh run
	.venv/bin/scones run

# Three workers on two cores: the tests spend part of their time waiting (state machine
# retries, polls, processes starting), and two workers left the cores about 14 % idle.
# Each worker holds up to about 3 GB. `make test TEST_WORKERS=N` for another count.
TEST_WORKERS ?= 3

# The tests write bytecode (__pycache__, ignored by git) even where PYTHONDONTWRITEBYTECODE
# is set: otherwise each worker rewrites every test module's asserts again, and each of the
# hundreds of processes the tests start (the CLI, the stack's servers) compiles the
# project's modules again. The Lambda workers still run without writing any, as on Lambda.
test:
	@scripts/bootstrap.sh test
	env -u PYTHONDONTWRITEBYTECODE .venv-test/bin/python -m pytest -n $(TEST_WORKERS) --dist loadgroup

lint:
	@scripts/bootstrap.sh test
	.venv-test/bin/ruff check . && .venv-test/bin/ruff format --check . && .venv-test/bin/mypy src layers/shared functions

bench:
	@scripts/bootstrap.sh run
	.venv/bin/scones bench

# 2000 uploads at once through the offline stack, then a count of lost and duplicated
# records (slow: not part of `make test`; results in docs/reliability.md)
burst:
	@scripts/bootstrap.sh run
	.venv/bin/scones bench burst --images 2000

# Retrain the shipped model (torch lives in .venv-train only).
model:
	@scripts/bootstrap.sh train
	.venv-train/bin/python -m scones.cli.main train --out models/bicycle-motorcycle

# The distillation teacher and the benchmark's reference: today's ensemble.
model-reference:
	@scripts/bootstrap.sh train
	.venv-train/bin/python -m scones.cli.main train --recipe ensemble --out models/reference/ensemble-v1

# The second teacher: the same ensemble recipe on the EfficientNet-Lite2 backbone, without
# flip averaging (its members take about 2.5x the MobileNetV3 members' time).
model-reference-lite2:
	@scripts/bootstrap.sh train
	.venv-train/bin/python -m scones.cli.main train --recipe ensemble --network efficientnet-lite2 --no-flip-tta --out models/reference/ensemble-lite2-v1

# The retraining state machine's steps offline (trains a candidate, so it needs torch).
# ARGS passes options: make retrain ARGS="--labelled reviewed/"
retrain:
	@scripts/bootstrap.sh train
	.venv-train/bin/python -m scones.cli.main retrain $(ARGS)

# docs/cli.md: every command's --help, from the parsers (a test fails when it is stale).
cli-reference:
	@scripts/bootstrap.sh run
	.venv/bin/python -m scones.cli.reference > docs/cli.md

# sam build: the Lambda artifacts (python3.13 on arm64, no Docker) in .aws-sam/build.
build:
	@scripts/bootstrap.sh sam
	scripts/sam.sh build

# The folder of the model the stack serves, whose baseline make deploy and deploy-baseline
# publish: MODEL=vehicles-model (default: the shipped model's).
MODEL ?=
model_option = $(if $(MODEL),--model "$(MODEL)")

# sam deploy with samconfig.toml, then the monitor's baseline into the stack's bucket.
# Fails at once when no AWS credentials are configured. ARGS=--guided asks for parameters.
deploy:
	@scripts/bootstrap.sh run sam
	scripts/deploy.sh $(model_option) $(ARGS)

# The monitor's baseline into a deployed stack's bucket (after a plain sam deploy, or a new
# model). ARGS: --stack NAME, and after -- the options sam deploy was given.
deploy-baseline:
	@scripts/bootstrap.sh run sam
	.venv/bin/scones deploy-baseline $(model_option) $(ARGS)

# The SageMaker serving image, without Docker (buildah + mmdebstrap; see docs/serving.md).
# Rebuilt only when its inputs change.
image:
	scripts/build_image.sh

# Build (or reuse) the image and check it: /ping and /invocations from `serve` inside it.
image-test:
	@scripts/bootstrap.sh test
	.venv-test/bin/python -m pytest tests/serving/test_serving_container.py -n 0 -s

# Not under a running `scones up`: it holds .scones/up.lock (and writes its pid there), and
# its functions' code and state live in .scones; removed, the stack would fail every upload
# and `scones down` would no longer find it. Without flock (macOS), the pid tells.
clean:
	@if [ -e .scones/up.lock ]; then \
	  if command -v flock >/dev/null; then \
	    flock -n -E 75 .scones/up.lock true; held=$$?; \
	  else \
	    pid=$$(cut -d' ' -f1 .scones/up.lock); \
	    held=$$( [ -n "$$pid" ] && kill -0 "$$pid" 2>/dev/null && echo 75 || echo 0 ); \
	  fi; \
	  if [ "$$held" = 75 ]; then \
	    echo "make clean: an offline stack is running in this project; stop it first: .venv/bin/scones down" >&2; \
	    exit 1; \
	  fi; \
	fi
	rm -rf .aws-sam .scones build
