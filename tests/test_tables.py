import polars as pl
import pytest

from mtcxr.tables import CHEXPERT_LABELS, ContractError, empty_table, validate_table


def studies(**overrides):
    row = {
        "study_id": "s1",
        "patient_id": "p1",
        "split": "train",
        "findings": None,
        "impression": "ok",
        "report": "ok",
        "dataset": "x",
    }
    row.update(overrides)
    return pl.DataFrame([row, {**row, "study_id": "s2"}])


def test_valid_table_is_conformed_in_contract_order():
    table = validate_table(studies().select(list(reversed(studies().columns))), "studies")
    assert table.columns == ["study_id", "patient_id", "split", "findings", "impression", "report", "dataset"]


def test_missing_column_is_named():
    with pytest.raises(ContractError, match=r"lacks column\(s\) \['report'\]"):
        validate_table(studies().drop("report"), "studies")


def test_duplicate_ids_and_bad_split_are_rejected():
    with pytest.raises(ContractError, match="must be unique"):
        validate_table(pl.concat([studies(), studies()]), "studies")
    with pytest.raises(ContractError, match="split has values \\['dev'\\]"):
        validate_table(studies(split="dev"), "studies")


def test_label_values_outside_chexpert_semantics_are_rejected():
    labels = empty_table("labels").vstack(
        pl.DataFrame(
            [
                {
                    "study_id": "s1",
                    **{n: None for n in CHEXPERT_LABELS},
                    "cardiomegaly": 2,
                    "abnormal": True,
                    "source": "dataset",
                }
            ],
            schema=empty_table("labels").schema,
        )
    )
    with pytest.raises(ContractError, match="labels.cardiomegaly has values \\[2\\]"):
        validate_table(labels, "labels")
