"""rules/databases.py: which databases of a server a backup run must account for, and the error naming them."""

from rules.databases import SYSTEM_DATABASES, unlisted_databases, unlisted_message


def test_system_configured_and_ignored_databases_are_accounted_for():
    present = ["postgres", "cloudsqladmin", "rdsadmin", "participant_4", "participant_5", "scratch"]
    assert unlisted_databases(present, ["participant_4"], ["scratch"]) == ["participant_5"]
    assert unlisted_databases(present, ["participant_4", "participant_5"], ["scratch"]) == []
    assert {"postgres", "cloudsqladmin", "rdsadmin"} <= SYSTEM_DATABASES


def test_the_message_names_server_role_databases_and_both_fixes():
    assert unlisted_message("10.20.0.5:5432", ["participant"], ["participant_5", "x"]) == (
        "server 10.20.0.5:5432 (role participant) has databases the stack neither backs up nor ignores: "
        "participant_5, x; add each to sv-backups:postgres.participant.databases to back it up (e.g. the new "
        "database after a synchronizer upgrade), or to sv-backups:postgres.participant.ignoreDatabases if it holds "
        "nothing to keep"
    )
    shared = unlisted_message("seq-pg:5432", ["sequencer", "mediator"], ["sequencer_5"])
    assert "(role sequencer, mediator)" in shared
    assert "sv-backups:postgres.<sequencer|mediator>.databases" in shared
