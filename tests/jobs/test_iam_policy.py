"""The IAM policy evaluator (tests/jobs/iam_policy.py) and the call-to-action mapping (tests/jobs/aws_authz.py)
against hand-written documents, each case as AWS's evaluation logic documents it."""

from __future__ import annotations

import pytest

from tests.jobs.aws_authz import Mapper, UnmappedCall, World
from tests.jobs.aws_calls import AwsCall
from tests.jobs.iam_policy import Policy, Request, UnsupportedPolicy, allowed_actions, condition_holds, evaluate

ROLE = "arn:aws:iam::111122223333:role/sv-backups/sv-1/jobs/sv-1-pg-backup"
OTHER = "arn:aws:iam::111122223333:role/ops"
BUCKET = "arn:aws:s3:::b"
KEY = "arn:aws:kms:us-east-1:111122223333:key/k1"


def doc(*statements) -> dict:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def policy(*statements, name="p") -> Policy:
    return Policy.parse(name, doc(*statements))


def req(action, resource, principal=ROLE, **context) -> Request:
    return Request(principal, action, resource, context)


WRITER = policy(
    {"Sid": "Write", "Effect": "Allow", "Action": ["s3:PutObject", "s3:Get*"], "Resource": f"{BUCKET}/*"},
    {"Sid": "List", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": BUCKET},
    name="writer",
)


# --- actions and resources ----------------------------------------------------------------------------------
def test_allow_needs_a_matching_action_and_resource():
    assert evaluate(req("s3:PutObject", f"{BUCKET}/recent/x"), [WRITER])
    assert evaluate(req("S3:getobjecttagging", f"{BUCKET}/x"), [WRITER]), "actions are case-insensitive"
    assert not evaluate(req("s3:DeleteObject", f"{BUCKET}/x"), [WRITER]), "implicit deny"
    assert not evaluate(req("s3:PutObject", "arn:aws:s3:::other/x"), [WRITER])
    assert not evaluate(req("s3:ListBucket", f"{BUCKET}/x"), [WRITER])


def test_explicit_deny_wins_and_is_reported():
    deny = policy({"Sid": "NoDeletes", "Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": "*",
                   "Condition": {"StringEquals": {"aws:PrincipalArn": ROLE}}}, name="bucket")  # fmt: skip
    decision = evaluate(req("s3:PutObject", f"{BUCKET}/x"), [WRITER], deny)
    assert not decision and decision.denied_by == ["bucket#NoDeletes"] and decision.allowed_by == ["writer#Write"]


def test_not_action_and_not_resource():
    guard = policy(
        {"Sid": "OnlyReads", "Effect": "Deny", "NotAction": ["s3:Get*", "s3:List*"], "Resource": "*"},
        {"Sid": "NotThere", "Effect": "Deny", "Action": "*", "NotResource": [BUCKET, f"{BUCKET}/*"]},
    )
    allow_all = policy({"Effect": "Allow", "Action": "*", "Resource": "*"})
    assert evaluate(req("s3:GetObject", f"{BUCKET}/x"), [allow_all, guard])
    assert evaluate(req("s3:ListBucket", BUCKET), [allow_all, guard])
    assert not evaluate(req("s3:PutObject", f"{BUCKET}/x"), [allow_all, guard])
    assert not evaluate(req("s3:GetObject", "arn:aws:s3:::elsewhere/x"), [allow_all, guard])


def test_resource_wildcards():
    ebs = policy({"Effect": "Allow", "Action": "ec2:CopySnapshot", "Resource": "arn:aws:ec2:us-?est-2::snapshot/*"})
    assert evaluate(req("ec2:CopySnapshot", "arn:aws:ec2:us-west-2::snapshot/snap-1"), [ebs])
    assert not evaluate(req("ec2:CopySnapshot", "arn:aws:ec2:us-east-1::snapshot/snap-1"), [ebs])


# --- conditions -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("operator", "wanted", "context", "holds"),
    [
        ("StringEquals", "a", {"k": "a"}, True),
        ("StringEquals", ["x", "a"], {"k": "a"}, True),  # values of one key: OR
        ("StringEquals", "a", {"K": "a"}, True),  # key names are case-insensitive
        ("StringEquals", "a", {}, False),  # absent: false
        ("StringNotEquals", "a", {}, True),  # absent, negated: true
        ("StringNotEquals", ["a", "b"], {"k": "b"}, False),  # negated: matches none of the values
        ("StringNotEqualsIfExists", "a", {}, True),
        ("StringEqualsIfExists", "a", {"k": "b"}, False),
        ("StringLike", "rec*/??", {"k": "recent/ab"}, True),
        ("StringNotLike", "rec*", {"k": "historical/x"}, True),
        ("Null", "true", {}, True),
        ("Null", "true", {"k": "*"}, False),
        ("Null", "false", {"k": "*"}, True),
        ("Bool", "true", {"k": "True"}, True),
        ("Bool", "false", {}, False),
        ("ArnLike", "arn:aws:iam::1:role/jobs/*", {"k": "arn:aws:iam::1:role/jobs/pg"}, True),
        ("ArnLike", "arn:aws:iam::*:role/jobs/*", {"k": "arn:aws:iam::1:user/jobs/pg"}, False),
        ("ArnNotLike", ["arn:aws:iam::1:role/restore"], {"k": "arn:aws:iam::1:role/pg"}, True),
        ("NumericLessThanEquals", "5", {"k": "4"}, True),
        ("ForAnyValue:StringEquals", "svbackups-node", {"k": ["Name", "svbackups-node"]}, True),
        ("ForAllValues:StringEquals", ["a", "b"], {"k": ["a", "c"]}, False),
        ("ForAllValues:StringEquals", ["a"], {}, True),
    ],
)
def test_condition_operators(operator, wanted, context, holds):
    assert condition_holds(operator, "k", wanted, context) is holds


def test_keys_and_operators_of_a_condition_are_anded():
    both = policy({"Effect": "Allow", "Action": "ec2:CreateTags", "Resource": "*", "Condition": {
        "StringEquals": {"ec2:CreateAction": "CopySnapshot", "aws:RequestTag/svbackups-node": "sv-1"}}})  # fmt: skip
    assert evaluate(req("ec2:CreateTags", "x", **{"ec2:CreateAction": "CopySnapshot",
                                                  "aws:RequestTag/svbackups-node": "sv-1"}), [both])  # fmt: skip
    assert not evaluate(req("ec2:CreateTags", "x", **{"aws:RequestTag/svbackups-node": "sv-1"}), [both])
    assert not evaluate(req("ec2:CreateTags", "x", **{"ec2:CreateAction": "CopySnapshot",
                                                      "aws:RequestTag/svbackups-node": "sv-2"}), [both])  # fmt: skip


def test_the_create_only_bucket_policy_refuses_unconditional_object_creation():
    bucket = policy({"Sid": "DenyOverwrites", "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
                     "Resource": f"{BUCKET}/*", "Condition": {
                         "ArnLike": {"aws:PrincipalArn": "arn:aws:iam::111122223333:role/sv-backups/sv-1/jobs/*"},
                         "Null": {"s3:if-none-match": "true"}, "Bool": {"s3:ObjectCreationOperation": "true"}}},
                    name="bucket")  # fmt: skip
    put = {"s3:ObjectCreationOperation": "true"}
    assert evaluate(req("s3:PutObject", f"{BUCKET}/k", **put, **{"s3:if-none-match": "*"}), [WRITER], bucket)
    assert not evaluate(req("s3:PutObject", f"{BUCKET}/k", **put), [WRITER], bucket)
    assert evaluate(req("s3:PutObject", f"{BUCKET}/k", **{"s3:ObjectCreationOperation": "false"}), [WRITER], bucket)
    # Another principal (not a job role) is not concerned by this Deny.
    ops = policy({"Effect": "Allow", "Action": "s3:PutObject", "Resource": "*"})
    assert evaluate(req("s3:PutObject", f"{BUCKET}/k", principal=OTHER, **put), [ops], bucket)


# --- resource policies and keys ---------------------------------------------------------------------------
def test_a_resource_policy_grants_a_named_principal_and_delegates_for_the_account():
    direct = policy({"Effect": "Allow", "Principal": {"AWS": ROLE}, "Action": "s3:GetObject", "Resource": "*"})
    account = policy({"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
                      "Action": "s3:GetObject", "Resource": "*"})  # fmt: skip
    assert evaluate(req("s3:GetObject", f"{BUCKET}/x"), [], direct)
    assert not evaluate(req("s3:GetObject", f"{BUCKET}/x"), [], account), "the account root only delegates"
    assert not evaluate(req("s3:GetObject", f"{BUCKET}/x", principal=OTHER), [], direct)
    service = policy({"Effect": "Allow", "Principal": {"Service": "s3.amazonaws.com"}, "Action": "*", "Resource": "*"})
    assert not evaluate(req("s3:GetObject", f"{BUCKET}/x"), [], service)


def test_a_key_policy_must_allow_directly_or_by_delegation():
    iam_allows = policy({"Effect": "Allow", "Action": "kms:GenerateDataKey", "Resource": KEY,
                         "Condition": {"StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}}})  # fmt: skip
    default = policy({"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"}, "Action": "kms:*",
                      "Resource": "*"}, name="key")  # fmt: skip
    closed = policy({"Effect": "Allow", "Principal": {"AWS": OTHER}, "Action": "kms:*", "Resource": "*"})
    via_s3 = req("kms:GenerateDataKey", KEY, **{"kms:ViaService": "s3.us-east-1.amazonaws.com"})
    assert evaluate(via_s3, [iam_allows], default, key_policy=True)
    assert not evaluate(via_s3, [iam_allows], closed, key_policy=True), "IAM alone never opens a key"
    assert not evaluate(via_s3, [], default, key_policy=True), "delegation still needs an IAM allow"
    assert not evaluate(req("kms:GenerateDataKey", KEY), [iam_allows], default, key_policy=True)


def test_unsupported_constructs_raise_instead_of_guessing():
    for statement, context in [
        ({"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"IpAddress": {"aws:SourceIp": "1/8"}}},
         {"aws:SourceIp": "1.2.3.4"}),
        ({"Effect": "Allow", "Action": "*", "Resource": "arn:aws:s3:::${aws:username}/*"}, {}),
        ({"Effect": "Allow", "Action": "*", "Resource": "*",
          "Condition": {"StringEquals": {"aws:TagKeys": "a"}}}, {"aws:TagKeys": ["a"]}),
    ]:  # fmt: skip
        with pytest.raises(UnsupportedPolicy):
            evaluate(req("s3:GetObject", "arn:aws:s3:::u/x", **context), [policy(statement)])
    with pytest.raises(UnsupportedPolicy):
        Policy.parse("old", {"Version": "2008-10-17", "Statement": []})
    with pytest.raises(UnsupportedPolicy, match="NotAction"):
        allowed_actions([policy({"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"})])


def test_allowed_actions_lists_what_allow_statements_name():
    assert allowed_actions([WRITER]) == {"s3:putobject", "s3:get*", "s3:listbucket"}


# --- mapping calls -------------------------------------------------------------------------------------------
def world() -> World:
    return World(principal=ROLE, bucket_keys={"b": KEY})


def call(service, operation, params, response=None, region="us-east-1") -> AwsCall:
    return AwsCall(service, operation, region, params, response)


def test_a_head_of_a_missing_object_also_needs_list_bucket():
    found = Mapper(world(), [call("s3", "HeadObject", {"Bucket": "b", "Key": "k"}, {})]).needs()
    missing = Mapper(world(), [call("s3", "HeadObject", {"Bucket": "b", "Key": "k"}, {"Error": {"Code": "404"}})])
    assert [n.request.action for n in found] == ["s3:GetObject"]
    assert [n.request.action for n in missing.needs()] == ["s3:GetObject", "s3:ListBucket"]


def test_a_conditional_put_carries_its_condition_keys_and_the_kms_call_s3_makes():
    put, kms = Mapper(world(), [call("s3", "PutObject", {"Bucket": "b", "Key": "k", "IfNoneMatch": "*"})]).needs()
    assert (put.request.action, put.request.resource, put.owner) == ("s3:PutObject", f"{BUCKET}/k", ("bucket", "b"))
    assert (
        put.request.context["s3:if-none-match"] == "*" and put.request.context["s3:ObjectCreationOperation"] == "true"
    )
    assert (kms.request.action, kms.request.resource, kms.owner) == ("kms:GenerateDataKey", KEY, ("key", KEY))
    assert kms.request.context["kms:EncryptionContext:aws:s3:arn"] == BUCKET


def test_an_unknown_call_is_refused():
    with pytest.raises(UnmappedCall, match="s3:DeleteObject"):
        Mapper(world(), [call("s3", "DeleteObject", {"Bucket": "b", "Key": "k"})]).needs()
