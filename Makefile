# Two commands on a fresh clone (only Python 3.10+ and make needed):
#   make demo   set up .venv, then generate synthetic pets, train, test and draw
#   make test   set up .venv, then run the test suite
#   make demo-check   the demo recipe over 3 seeds x float32/bfloat16, scored (45-60 min)
#   make figures      the README's pictures, from the last make demo
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup test demo demo-times demo-check print-demo-args clean

setup: $(STAMP)

# Re-install only when the declared dependencies change. uv (put into the .venv by pip) installs
# the same packages as pip in a third of the time: it downloads, unpacks and byte-compiles in
# parallel, where pip does one file after another. pip installs them itself where uv cannot
# be had or fails, or with INSTALLER=pip (uv does not read pip's configuration: a private
# package index set up for pip only).
INSTALLER ?= uv
PIP_INSTALL := $(BIN)/python -m pip install --quiet --disable-pip-version-check
ifeq ($(INSTALLER),uv)
INSTALL = ($(PIP_INSTALL) uv && $(BIN)/uv pip install --quiet --python $(BIN)/python \
	   --compile-bytecode -e '.[dev]') || $(PIP_INSTALL) -e '.[dev]'
else
INSTALL = $(PIP_INSTALL) -e '.[dev]'
endif

$(STAMP): setup.py pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python 3.10+ is needed, found " + sys.version.split()[0])'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(INSTALL)
	touch $(STAMP)

# The suite in TEST_WORKERS processes (pytest-xdist): one process keeps about one of the 2 cores
# busy on average, two took a third less time here (README, Development). TEST_WORKERS=0 runs it
# in one process.
TEST_WORKERS ?= 2

test: setup
	$(BIN)/python -m pytest tests -n $(TEST_WORKERS) --dist worksteal

# The offline demo: synthetic pets, GCN trained from scratch on the CPU (docs/demo.md: the
# recipe and why), then test.py and draw.py. bfloat16 only where the CPU has it natively.
# The recipe lives here only: `make demo-check` (benchmarks/demo_quality.py) reads it through
# `make -s print-demo-args` and checks it over 3 seeds x both precisions.
DEMO_DATA  := data/synthetic
DEMO_RUN   := runs/demo
DEMO_DATA_ARGS  := --num-images 1200 --test-fraction 0.15 --min-size 80 --max-size 96 \
                   --num-unlabeled 8
DEMO_TRAIN_ARGS := --image-size 96 --pretrain none --batch-size 8 --epochs 12 --lr 0.03 \
                   --warmup-steps 100 --clip-norm 5 --bn-momentum 0.9 --schedule cosine
# bfloat16 only where the CPU has it natively (the flags of learning/precision.py); elsewhere it is
# emulated, many times slower than float32.
BF16       := $(shell grep -qsE 'avx512_bf16|amx_bf16' /proc/cpuinfo && echo --mixed-precision)

# The demo's stage clock: `$(LAP) NAME` appends "NAME <time>" to DEMO_CLOCK when a stage ends;
# STAGE_TIMES prints each stage's seconds from those lines (the system Python: it runs before
# the .venv exists).
DEMO_CLOCK  := runs/demo-stages.txt
LAP         := @$(PYTHON) -c 'import sys, time; open(sys.argv[1], "a").write(f"{sys.argv[2]} {time.time():.2f}\n")' $(DEMO_CLOCK)
STAGE_TIMES := @$(PYTHON) -c 'import sys; r = [(n, float(t)) for n, t in (l.split() for l in open(sys.argv[1]))]; t = r[-1][1] - r[0][1]; print("make demo took %.0f s (%d min %02d s): " % (t, t // 60, t % 60) + ", ".join("%s %.0f s" % (b[0], b[1] - a[1]) for a, b in zip(r, r[1:])))' $(DEMO_CLOCK)

demo:
	@mkdir -p runs && rm -f $(DEMO_CLOCK)
	$(LAP) start
	@$(MAKE) --no-print-directory setup
	$(LAP) install
	$(BIN)/python -m datasets.synthetic --out $(DEMO_DATA) --overwrite $(DEMO_DATA_ARGS)
	$(LAP) data
	rm -rf $(DEMO_RUN)
	$(BIN)/python train.py --data $(DEMO_DATA)/train --save-dir $(DEMO_RUN) $(DEMO_TRAIN_ARGS) $(BF16)
	$(LAP) train
	$(BIN)/python test.py --data $(DEMO_DATA)/test --model $(DEMO_RUN)
	$(LAP) test
	$(BIN)/python draw.py --images $(DEMO_DATA)/unlabeled --model $(DEMO_RUN)
	$(LAP) draw
	@echo "Learning curve: $(DEMO_RUN)/learning_curve.png   History: $(DEMO_RUN)/history.csv"
	@echo "Drawn test images: $(DEMO_DATA)/test/draws/ (best and worst: summary_sheet.png)   Drawn unlabeled images: $(DEMO_DATA)/unlabeled/draws/"
	$(STAGE_TIMES)

# The last make demo's stage times again.
demo-times:
	$(STAGE_TIMES)

# The demo's promise over 3 seeds x float32/bfloat16, both test protocols (45-60 min).
demo-check: setup
	$(BIN)/python benchmarks/demo_quality.py

# The README's pictures (docs/demo_overlays.png, docs/demo_curve.png) from the last `make demo`.
.PHONY: figures
figures: setup
	$(BIN)/python benchmarks/readme_figures.py --run $(DEMO_RUN) --draws $(DEMO_DATA)/test/draws

print-demo-args:
	@echo "DEMO_DATA_ARGS=$(DEMO_DATA_ARGS)"
	@echo "DEMO_TRAIN_ARGS=$(DEMO_TRAIN_ARGS)"
	@echo "BF16=$(BF16)"

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
