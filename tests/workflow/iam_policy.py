"""A small IAM policy evaluator for the transformed template, and the intrinsics it needs.

Tests ask questions such as "may cloudwatch.amazonaws.com call kms:GenerateDataKey on this
key, for an alarm of this account?" and answer them from the policy statements: principal,
action and resource wildcards, and condition operators, the way IAM evaluates a single
policy (an explicit Deny wins, then any Allow, else the implicit deny). Operators it does not
know raise, so a policy it cannot judge fails the test instead of passing it.

The template's intrinsics are resolved against a made-up account, region and parameter
values; each resource's Ref/GetAtt follows the shape AWS gives it (ARNs, queue URLs, key ids).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

ACCOUNT = "123456789012"
REGION = "us-east-1"
PARTITION = "aws"
STACK = "scones"

ALLOW, DENY, IMPLICIT_DENY = "Allow", "Deny", "ImplicitDeny"


# ------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class Request:
    action: str
    resource: str
    principal: tuple[str, str] | None = None  # ("Service", "x.amazonaws.com") or ("AWS", arn)
    context: dict[str, str] = field(default_factory=dict)


def _wildcard(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    regex = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    flags = re.IGNORECASE if ignore_case else 0
    return re.fullmatch(regex, value, flags) is not None


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _principal_matches(principal: Any, request: Request) -> bool:
    if principal is None:
        return True  # an identity policy: the principal is whoever holds it
    if principal == "*":
        return True
    if request.principal is None or not isinstance(principal, dict):
        return False
    kind, who = request.principal
    for value in as_list(principal.get(kind, [])):
        if value == "*" or value == who:
            return True
        # An account (root ARN or id) stands for every principal of that account.
        if (
            kind == "AWS"
            and value in (ACCOUNT, f"arn:{PARTITION}:iam::{ACCOUNT}:root")
            and who.startswith(f"arn:{PARTITION}:iam::{ACCOUNT}:")
        ):
            return True
    return False


_POSITIVE = {
    "StringEquals": lambda p, v: p == v,
    "StringEqualsIgnoreCase": lambda p, v: p.lower() == v.lower(),
    "StringLike": _wildcard,
    "ArnEquals": lambda p, v: p == v,
    "ArnLike": _wildcard,
    "Bool": lambda p, v: p.lower() == v.lower(),
}
_NEGATED = {
    "StringNotEquals": "StringEquals",
    "StringNotLike": "StringLike",
    "ArnNotEquals": "ArnEquals",
    "ArnNotLike": "ArnLike",
}


def _condition_holds(condition: dict[str, Any], context: dict[str, str]) -> bool:
    lowered = {k.lower(): v for k, v in context.items()}
    for operator, tests in condition.items():
        if_exists = operator.endswith("IfExists")
        base = operator.removesuffix("IfExists")
        negated = base in _NEGATED
        compare = _POSITIVE.get(_NEGATED.get(base, base))
        if compare is None:
            raise ValueError(f"condition operator {operator} is not understood by this evaluator")
        for key, patterns in tests.items():
            value = lowered.get(key.lower())
            if value is None:
                if if_exists or negated:
                    continue
                return False
            matched = any(compare(str(p), value) for p in as_list(patterns))
            if matched == negated:
                return False
    return True


def statement_applies(statement: dict[str, Any], request: Request) -> bool:
    if "NotPrincipal" in statement:
        raise ValueError("NotPrincipal is not understood by this evaluator")
    if not _principal_matches(statement.get("Principal"), request):
        return False
    if "Action" in statement:
        actions = as_list(statement["Action"])
        if not any(_wildcard(a, request.action, ignore_case=True) for a in actions):
            return False
    else:
        excluded = as_list(statement["NotAction"])
        if any(_wildcard(a, request.action, ignore_case=True) for a in excluded):
            return False
    if "Resource" in statement:
        if not any(_wildcard(r, request.resource) for r in as_list(statement["Resource"])):
            return False
    elif "NotResource" in statement and any(
        _wildcard(r, request.resource) for r in as_list(statement["NotResource"])
    ):
        return False
    return _condition_holds(statement.get("Condition", {}), request.context)


def decide(statements: list[dict[str, Any]], request: Request) -> str:
    """IAM's answer for one policy (or the union of several): Allow, Deny or ImplicitDeny."""
    applying = [s for s in statements if statement_applies(s, request)]
    if any(s["Effect"] == "Deny" for s in applying):
        return DENY
    if any(s["Effect"] == "Allow" for s in applying):
        return ALLOW
    return IMPLICIT_DENY


# ------------------------------------------------------------------- intrinsics


def physical_name(template: dict[str, Any], logical_id: str) -> str:
    return f"{STACK}-{logical_id}"


class Resolver:
    """Resolve a transformed template's intrinsics for given parameter values."""

    def __init__(self, template: dict[str, Any], parameters: dict[str, str]) -> None:
        self.template = template
        self.parameters = parameters
        self.resources: dict[str, Any] = template["Resources"]

    # -- conditions
    def condition(self, name: str) -> bool:
        return bool(self.evaluate(self.template["Conditions"][name]))

    def evaluate(self, expr: Any) -> Any:
        if isinstance(expr, dict) and len(expr) == 1:
            ((op, arg),) = expr.items()
            if op == "Condition":
                return self.condition(arg)
            if op == "Fn::Equals":
                return str(self.evaluate(arg[0])) == str(self.evaluate(arg[1]))
            if op == "Fn::Not":
                return not self.evaluate(arg[0])
            if op == "Fn::And":
                return all(self.evaluate(a) for a in arg)
            if op == "Fn::Or":
                return any(self.evaluate(a) for a in arg)
        return self(expr)

    # -- values
    def ref(self, name: str) -> str:
        pseudo = {
            "AWS::AccountId": ACCOUNT,
            "AWS::Region": REGION,
            "AWS::Partition": PARTITION,
            "AWS::StackName": STACK,
            "AWS::URLSuffix": "amazonaws.com",
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        resource = self.resources[name]
        kind = resource["Type"]
        props = resource.get("Properties", {})
        if kind == "AWS::S3::Bucket":
            return (
                str(self(props["BucketName"]))
                if "BucketName" in props
                else physical_name(self.template, name)
            )
        if kind == "AWS::SQS::Queue":
            return (
                f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{physical_name(self.template, name)}"
            )
        if kind == "AWS::KMS::Key":
            return f"key-id-{name}"
        if kind in ("AWS::SNS::Topic", "AWS::StepFunctions::StateMachine"):
            return self.get_att(name, "Arn")
        return physical_name(self.template, name)

    def get_att(self, name: str, attribute: str) -> str:
        kind = self.resources[name]["Type"]
        base = physical_name(self.template, name)
        if attribute == "QueueName":
            return base
        if attribute != "Arn":
            return f"{base}.{attribute}"
        service_arn = {
            "AWS::SQS::Queue": f"arn:{PARTITION}:sqs:{REGION}:{ACCOUNT}:{base}",
            "AWS::SNS::Topic": f"arn:{PARTITION}:sns:{REGION}:{ACCOUNT}:{base}",
            "AWS::KMS::Key": f"arn:{PARTITION}:kms:{REGION}:{ACCOUNT}:key/key-id-{name}",
            "AWS::S3::Bucket": "",
            "AWS::IAM::Role": f"arn:{PARTITION}:iam::{ACCOUNT}:role/{base}",
            "AWS::Lambda::Function": f"arn:{PARTITION}:lambda:{REGION}:{ACCOUNT}:function:{base}",
            "AWS::DynamoDB::Table": f"arn:{PARTITION}:dynamodb:{REGION}:{ACCOUNT}:table/{base}",
            "AWS::StepFunctions::StateMachine": (
                f"arn:{PARTITION}:states:{REGION}:{ACCOUNT}:stateMachine:{base}"
            ),
            "AWS::Logs::LogGroup": f"arn:{PARTITION}:logs:{REGION}:{ACCOUNT}:log-group:{base}:*",
        }
        if kind == "AWS::S3::Bucket":
            return f"arn:{PARTITION}:s3:::{self.ref(name)}"
        if kind not in service_arn:
            raise ValueError(f"no ARN shape for {kind} ({name})")
        return service_arn[kind]

    def sub(self, text: str, names: dict[str, Any]) -> str:
        def replace(match: re.Match[str]) -> str:
            token = match.group(1)
            if token.startswith("!"):
                return "${" + token[1:] + "}"
            if token in names:
                return str(self(names[token]))
            if "." in token and token.split(".", 1)[0] in self.resources:
                resource, attribute = token.split(".", 1)
                return self.get_att(resource, attribute)
            return self.ref(token)

        return re.sub(r"\$\{([^}]+)\}", replace, text)

    def __call__(self, value: Any) -> Any:
        if isinstance(value, list):
            resolved = [self(v) for v in value]
            return [v for v in resolved if v is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((op, arg),) = value.items()
            if op == "Ref":
                return _NO_VALUE if arg == "AWS::NoValue" else self.ref(arg)
            if op == "Fn::GetAtt":
                name, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.get_att(name, attribute)
            if op == "Fn::Sub":
                text, names = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
                return self.sub(text, names)
            if op == "Fn::If":
                return self(arg[1] if self.condition(arg[0]) else arg[2])
            if op == "Fn::Join":
                return str(arg[0]).join(str(self(v)) for v in self(arg[1]))
            if op == "Fn::Select":
                return self(arg[1])[int(self(arg[0]))]
            if op == "Fn::Split":
                return str(self(arg[1])).split(arg[0])
            if op == "Fn::FindInMap":
                mapping = self.template["Mappings"][arg[0]]
                return mapping[str(self(arg[1]))][str(self(arg[2]))]
        resolved = {k: self(v) for k, v in value.items()}
        return {k: v for k, v in resolved.items() if v is not _NO_VALUE}


class _NoValue:
    pass


_NO_VALUE = _NoValue()


def role_statements(resolver: Resolver, role_logical_id: str) -> list[dict[str, Any]]:
    """Every inline statement of a role, resolved (managed policies are checked apart)."""
    role = resolver(resolver.resources[role_logical_id]["Properties"])
    statements: list[dict[str, Any]] = []
    for policy in role.get("Policies", []):
        statements += as_list(policy["PolicyDocument"]["Statement"])
    return statements


def check_rules(template: dict[str, Any], parameters: dict[str, str]) -> list[str]:
    """The AssertDescription of every template Rule assertion that fails for these values."""
    resolver = Resolver(template, parameters)
    failed = []
    for rule in template.get("Rules", {}).values():
        if "RuleCondition" in rule and not resolver.evaluate(rule["RuleCondition"]):
            continue
        for assertion in rule["Assertions"]:
            if not resolver.evaluate(assertion["Assert"]):
                failed.append(str(assertion.get("AssertDescription", assertion["Assert"])))
    return failed
