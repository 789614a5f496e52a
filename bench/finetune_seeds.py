"""Notebook 3.5's five-seed table: fine-tuning, linear probes and training from scratch, seed by seed.

The notebook computes the probes for five seeds and reruns seed 0 of the kept fine-tuning and scratch settings;
this script measured the rest, with the notebook's functions and settings. Seed s draws the labelled passages
with passages(train_plays, seed=s), calls set_seed(s) and TrainConfig(seed=s); the test passages are fixed
(seed 0). Each run prints one JSON line (accuracy, macro-F1, first and last losses, wall and CPU seconds).

    python bench/finetune_seeds.py SEEDS SPEC [SPEC ...]

SPEC is one of
    probe:LR:STEPS:BATCH                                  a linear probe on the frozen pre-trained GPT
    lpft:PLR:PSTEPS:PBATCH:LR:STEPS:BATCH:LM_WEIGHT       that probe's head, then the whole model fine-tuned
    ft:LR:STEPS:BATCH:LM_WEIGHT                           the whole model fine-tuned from a random head
    scratch:LR:STEPS:BATCH                                the same model from random weights
The notebook's table came from
    python bench/finetune_seeds.py 0,1,2,3,4 probe:3e-3:300:32 probe:1e-2:300:32 probe:3e-2:300:32 \
        lpft:1e-2:300:32:3e-5:60:8:0 lpft:1e-2:300:32:3e-5:60:8:0.5 lpft:1e-2:300:32:1e-4:60:8:0 \
        lpft:1e-2:300:32:1e-4:60:8:0.5 lpft:1e-2:300:32:3e-4:60:8:0 \
        scratch:1e-4:60:8 scratch:3e-4:60:8 scratch:1e-3:60:8 scratch:3e-3:60:8
(10 to 20 seconds per fine-tuning or scratch run on one CPU thread; split the seeds over two
processes, one per core, to halve the time). Passages are read as two windows of the book model's
context (BLOCK = 2 * block_size = 256 tokens), as in the notebook.
"""
import sys, time, json
import torch
from gptlib.finetune import FOLIO, GPTClassifier, encode_passages, evaluate, finetune, passages, split_plays
from gptlib.data import VALIDATION_PLAYS
from gptlib.model import GPT
from gptlib.train import TrainConfig
from gptlib.zoo import pretrained
from gptlib.utils import set_seed
torch.set_num_threads(1)
seeds = [int(s) for s in sys.argv[1].split(',')]
specs = sys.argv[2:]
gpt0, tok = pretrained("shakespeare-bpe", show_progress=False)
BLOCK = 2 * gpt0.config.block_size
tr, te = split_plays(VALIDATION_PLAYS)
test = encode_passages(tok, passages(te, FOLIO, chars=512, per_class=100, seed=0), BLOCK)

def cfg(lr, steps, bs, seed):
    return TrainConfig(max_iters=steps, batch_size=bs, learning_rate=lr, min_lr=lr / 10,
                       warmup_iters=max(1, steps // 10), seed=seed)

def emit(**kw):
    print(json.dumps(kw), flush=True)

for seed in seeds:
    train = encode_passages(tok, passages(tr, FOLIO, chars=512, per_class=100, seed=seed), BLOCK)
    probes = {}
    for spec in specs:
        p = spec.split(':'); mode = p[0]; v = [float(x) for x in p[1:]]
        t0, c0 = time.time(), time.process_time()
        set_seed(seed)
        if mode in ('probe', 'lpft'):
            key = tuple(v[:3])
            if key not in probes:
                set_seed(seed)
                probe = GPTClassifier(gpt0, 3, freeze=True)
                losses = finetune(probe, train, cfg(v[0], int(v[1]), int(v[2]), seed), show_progress=False)
                probes[key] = (probe, losses)
            probe, losses = probes[key]
            if mode == 'probe':
                s = evaluate(probe, test)
            else:
                set_seed(seed)
                clf = GPTClassifier(gpt0, 3, lm_weight=v[6])
                clf.head.load_state_dict(probe.head.state_dict())
                losses = finetune(clf, train, cfg(v[3], int(v[4]), int(v[5]), seed), show_progress=False)
                s = evaluate(clf, test)
        elif mode == 'ft':
            clf = GPTClassifier(gpt0, 3, lm_weight=v[3])
            losses = finetune(clf, train, cfg(v[0], int(v[1]), int(v[2]), seed), show_progress=False)
            s = evaluate(clf, test)
        elif mode == 'scratch':
            clf = GPTClassifier(GPT(gpt0.config), 3)
            losses = finetune(clf, train, cfg(v[0], int(v[1]), int(v[2]), seed), show_progress=False)
            s = evaluate(clf, test)
        k = max(1, len(losses) // 10)
        emit(spec=spec, seed=seed, acc=round(s.accuracy, 3), f1=round(s.macro_f1, 3),
             loss0=round(sum(losses[:k]) / k, 3), loss_end=round(sum(losses[-k:]) / k, 3),
             wall=round(time.time() - t0, 1), cpu=round(time.process_time() - c0, 1))
