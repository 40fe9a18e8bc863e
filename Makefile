# Set-up is part of each target: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint experiment experiment-fewshot phenomena bench gpu-check-prepare gpu-check setup clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e ".[dev,ray]"
	touch $(STAMP)

setup: $(STAMP)

## The main job: base-to-new comparison on the embedded synthetic world (a few minutes on a CPU).
demo: $(STAMP)
	$(VENV)/bin/vlprompt demo

## The whole test suite.
test: $(STAMP)
	$(VENV)/bin/pytest

## Lint: ruff's rules chosen in pyproject.toml, then DESIGN.md's import contracts (lint-imports).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

## Base-to-new of every method on the embedded world's objects_noisy_base task, each at its paper's
## schedule, 3 seeds, two runs at a time (about 80 minutes on 2 cores before TCP, DePT, MMRL, CLIP-Adapter,
## CLIP-LoRA and PLOT joined the list, several hours with them); the table and its bars go into
## the docs beside the reading of them in docs/results/world_base_to_new.md, with a screenshot of its
## HTML report (when chromium is installed).
experiment: $(STAMP)
	$(VENV)/bin/vlprompt run base_to_new --preset world-methods --seeds 1,2,3 --out runs/world-methods --workers 2
	cp runs/world-methods/base_to_new.md docs/results/world_base_to_new_table.md.tmp
	mv docs/results/world_base_to_new_table.md.tmp docs/results/world_base_to_new_table.md
	cp runs/world-methods/base_to_new.png docs/results/world_base_to_new.png.tmp
	mv docs/results/world_base_to_new.png.tmp docs/results/world_base_to_new.png
	$(VENV)/bin/vlprompt report runs/world-methods --out runs/world-methods/report
	if command -v chromium >/dev/null 2>&1; then \
		chromium --headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking \
			--disable-component-update --disable-sync --user-data-dir=$$(mktemp -d) --hide-scrollbars \
			--window-size=1100,1800 --screenshot=$(CURDIR)/docs/results/world_report.png.tmp.png \
			file://$(CURDIR)/runs/world-methods/report/index.html && \
		mv docs/results/world_report.png.tmp.png docs/results/world_report.png; fi

## Few-shot (1/2/4/8/16 shots, all 120 classes of objects_noisy_base, 3 seeds) of zero-shot CLIP, the baselines
## every paper must beat, CoOp and PLOT (alone and with Nemesis), each at its official schedule (165 runs,
## about 3 hours on 2 cores, most of it PLOT's 200 epochs of four prompts per class and CoOp's 16-shot runs);
## the table and its curves go into docs/results/ beside the reading of them in docs/results/world_few_shot.md.
experiment-fewshot: $(STAMP)
	$(VENV)/bin/vlprompt run few_shot --preset world-methods \
		--methods zeroshot,linear_probe,lpp,zslp+clap,tip_adapter,tip_adapter_f,clip_adapter,clip_lora,coop,plot,plot+nemesis \
		--shots 1,2,4,8,16 --seeds 1,2,3 --out runs/world-fewshot --workers 2
	cp runs/world-fewshot/few_shot.md docs/results/world_few_shot_table.md.tmp
	mv docs/results/world_few_shot_table.md.tmp docs/results/world_few_shot_table.md
	cp runs/world-fewshot/few_shot.png docs/results/world_few_shot.png.tmp
	mv docs/results/world_few_shot.png.tmp docs/results/world_few_shot.png

## The phenomena the other papers rest on, on the same task (about 30 minutes on 2 cores, after
## `make experiment`, whose seed-1 CoOp prompt the corruption analysis reads and whose 1-bit QPrompt runs
## the bits table reuses): the Low-Norm Effect on base and new classes, NPT under class imbalance (3 seeds)
## with neural-collapse metrics, QPrompt's accuracy against bits (3 seeds).
phenomena: $(STAMP)
	for subset in base new; do \
		$(VENV)/bin/vlprompt analyze corruption --prompt $$(ls -d runs/world-methods/runs/coop_world-objects_noisy_base_seed1_*)/prompt \
			--dataset world:objects_noisy_base --subset $$subset --replace 0.01,0.1,0.5,1 --rescale 0.25,0.5,2,4 \
			--out runs/world-corruption-$$subset && \
		cp runs/world-corruption-$$subset/corruption_heatmap.png docs/results/world_corruption_heatmap_$$subset.png.tmp && \
		mv docs/results/world_corruption_heatmap_$$subset.png.tmp docs/results/world_corruption_heatmap_$$subset.png || exit 1; done
	$(VENV)/bin/vlprompt run imbalanced --preset world-methods --methods coop,coop+npt --ratios 1,0.25,0.06 \
		--seeds 1,2,3 --out runs/world-imbalanced --workers 2
	for b in 2 4 8; do $(VENV)/bin/vlprompt run base_to_new --preset world-methods --methods coop+qprompt \
		--seeds 1,2,3 --out runs/world-qprompt-bits/$$b --workers 2 regularizers_defaults.qprompt.bits=$$b || exit 1; done

## Benchmarks (slow; run by hand).
bench: $(STAMP)
	$(PY) benchmarks/feature_cache.py
	$(PY) benchmarks/train_step.py
	$(PY) benchmarks/prefix_memory.py
	$(PY) benchmarks/cocoop_step.py
	$(PY) benchmarks/data_loading.py
	$(PY) benchmarks/text_chunk.py

## The GPU check, in two steps (docs/performance.md says how to start it on a lent GPU machine).
## Here, where pip works: download the wheels the GPU machine lacks into $(GPU_WHEELS) (ignored by git).
GPU_WHEELS := .gpu-wheels
gpu-check-prepare:
	rm -rf $(GPU_WHEELS).part
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		-r benchmarks/gpu_check_wheels.txt -d $(GPU_WHEELS).part
	rm -rf $(GPU_WHEELS) && mv $(GPU_WHEELS).part $(GPU_WHEELS)
	du -sh $(GPU_WHEELS) && ls $(GPU_WHEELS)

## There (python3 with PyTorch, no network): install those wheels into a temporary folder and run every
## CUDA path and the GPU benchmark within 8 minutes; results in OUT/gpu_check.json, .md and .log. Without
## CUDA it runs the check's CPU parts, small (here: make gpu-check OUT=DIR PYTHON=.venv/bin/python).
gpu-check:
	@test -n "$(OUT)" || { echo "usage: make gpu-check OUT=DIR (after make gpu-check-prepare where pip works)"; exit 2; }
	PYTHON=$(PYTHON) bash benchmarks/gpu_check.sh "$(OUT)"

clean:
	rm -rf $(VENV) runs .pytest_cache
