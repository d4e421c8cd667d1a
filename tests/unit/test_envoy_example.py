"""The Envoy example against Envoy's own API definitions (no Envoy binary runs here): it
parses into Envoy's Bootstrap message with unknown fields refused, using the generated
classes of a published package of Envoy's protos (xds-protos), and sets no field or enum
value Envoy marks deprecated."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.route.v3 import route_components_pb2 as route_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.http.ext_proc.v3 import ext_proc_pb2, processing_mode_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_authn_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2,
)
from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.any_pb2 import Any as AnyMessage
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from budget_guard.webhook.responses import HEADER_MODEL_OVERRIDE, HEADER_REQUEST_ID
from budget_guard.webhook.settings import IdentitySettings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE = EXAMPLES / "envoy" / "envoy.yaml"

# Importing a generated module registers its messages, which the example's typed_config
# fields name by type URL.
for module in (
    "envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2",
    "envoy.extensions.filters.http.router.v3.router_pb2",
    "envoy.extensions.filters.http.ext_proc.v3.ext_proc_pb2",
    "envoy.extensions.filters.http.header_mutation.v3.header_mutation_pb2",
    "envoy.extensions.filters.http.jwt_authn.v3.config_pb2",
    "envoy.extensions.upstreams.http.v3.http_protocol_options_pb2",
    "envoy.extensions.transport_sockets.tls.v3.tls_pb2",
):
    importlib.import_module(module)


def bootstrap() -> bootstrap_pb2.Bootstrap:
    document = yaml.safe_load(EXAMPLE.read_text())
    return json_format.ParseDict(document, bootstrap_pb2.Bootstrap(), ignore_unknown_fields=False)


def unpacked(message: AnyMessage) -> Message:
    name = message.type_url.rsplit("/", 1)[1]
    descriptor = descriptor_pool.Default().FindMessageTypeByName(name)
    inner = message_factory.GetMessageClass(descriptor)()
    assert message.Unpack(inner)
    return inner


def messages(message: Message, path: str = "") -> Iterator[tuple[str, Message]]:
    """Every message set in ``message``, Any fields opened, with its path."""
    if isinstance(message, AnyMessage):
        message = unpacked(message)
    yield path, message
    for field, value in message.ListFields():
        if field.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        if field.message_type.GetOptions().map_entry:
            if field.message_type.fields_by_name["value"].message_type is not None:
                for key, entry in value.items():
                    yield from messages(entry, f"{path}.{field.name}[{key}]")
        elif field.is_repeated:
            for index, item in enumerate(value):
                yield from messages(item, f"{path}.{field.name}[{index}]")
        else:
            yield from messages(value, f"{path}.{field.name}")


def deprecated_settings(root: Message) -> list[str]:
    found = []
    for path, message in messages(root):
        for field, value in message.ListFields():
            if field.GetOptions().deprecated:
                found.append(f"{path}.{field.name}")
            if field.type == FieldDescriptor.TYPE_ENUM:
                values = value if field.is_repeated else [value]
                for number in values:
                    if field.enum_type.values_by_number[number].GetOptions().deprecated:
                        found.append(f"{path}.{field.name}={number}")
    return found


def ext_authz() -> Any:
    (filter_config,) = [
        message
        for _, message in messages(bootstrap())
        if isinstance(message, ext_authz_pb2.ExtAuthz)
    ]
    return filter_config


def test_the_example_is_a_valid_bootstrap_with_no_deprecated_field() -> None:
    parsed = bootstrap()
    assert [cluster.name for cluster in parsed.static_resources.clusters] == [
        "budget_guard_grpc",
        "budget_guard",
        "identity_provider",
        "openai",
    ]
    assert deprecated_settings(parsed) == []


def test_the_deprecated_field_check_would_see_one() -> None:
    old_style = ext_authz_pb2.ExtAuthz()
    old_style.http_service.authorization_request.allowed_headers.patterns.add(exact="x-a")
    assert deprecated_settings(old_style) == [".http_service.authorization_request.allowed_headers"]


def test_the_check_has_an_explicit_timeout_and_keeps_the_deny_headers() -> None:
    config = ext_authz()
    assert config.http_service.server_uri.HasField("timeout")
    assert config.http_service.server_uri.timeout.ToMilliseconds() == 200
    assert not config.failure_mode_allow
    on_deny = config.http_service.authorization_response.allowed_client_headers.patterns
    listed = {
        (p.WhichOneof("match_pattern"), getattr(p, p.WhichOneof("match_pattern"))) for p in on_deny
    }
    sdk_headers = {("exact", "x-should-retry"), ("exact", "x-request-id"), ("exact", "request-id")}
    assert {("exact", "content-type"), ("exact", "retry-after"), ("prefix", "x-budget-")} <= listed
    assert sdk_headers <= listed  # the SDKs' own: no retry of a spent budget, the request id
    assert config.with_request_body.allow_partial_message


def test_one_route_opts_out_of_the_check_and_the_processing() -> None:
    found = [message for _, message in messages(bootstrap())]
    per_route = [m for m in found if isinstance(m, ext_authz_pb2.ExtAuthzPerRoute)]
    assert len(per_route) == 1
    assert per_route[0].disabled
    (processing,) = [m for m in found if isinstance(m, ext_proc_pb2.ExtProcPerRoute)]
    assert processing.disabled


def test_ext_proc_follows_ext_authz_and_never_breaks_a_stream() -> None:
    (manager,) = [
        message
        for _, message in messages(bootstrap())
        if isinstance(message, http_connection_manager_pb2.HttpConnectionManager)
    ]
    names = [http_filter.name for http_filter in manager.http_filters]
    assert names == [
        "envoy.filters.http.header_mutation",
        "envoy.filters.http.jwt_authn",
        "envoy.filters.http.ext_authz",
        "envoy.filters.http.ext_proc",
        "envoy.filters.http.router",
    ]
    (config,) = [
        m for _, m in messages(bootstrap()) if isinstance(m, ext_proc_pb2.ExternalProcessor)
    ]
    assert config.failure_mode_allow and not config.allow_mode_override
    assert config.message_timeout.ToMilliseconds() == 200
    assert config.grpc_service.envoy_grpc.cluster_name == "budget_guard_grpc"
    mode = config.processing_mode
    modes = processing_mode_pb2.ProcessingMode
    assert (mode.request_header_mode, mode.response_header_mode) == (modes.SEND, modes.SEND)
    assert mode.request_body_mode == modes.BUFFERED
    assert mode.response_body_mode == modes.STREAMED
    grpc_cluster = bootstrap().static_resources.clusters[0]
    options = unpacked(
        grpc_cluster.typed_extension_protocol_options[
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        ]
    )
    assert options.explicit_http_config.HasField("http2_protocol_options")  # type: ignore[attr-defined]
    endpoint = grpc_cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint
    assert endpoint.address.socket_address.port_value == 9090


def test_the_istio_envoy_filter_is_the_same_processor() -> None:
    (document,) = yaml.safe_load_all((EXAMPLES / "istio" / "ext-proc.yaml").read_text())
    (patch,) = document["spec"]["configPatches"]
    assert patch["patch"]["operation"] == "INSERT_BEFORE"  # before the router: after ext_authz
    typed = dict(patch["patch"]["value"]["typed_config"])
    typed.pop("@type")
    istio = json_format.ParseDict(
        typed, ext_proc_pb2.ExternalProcessor(), ignore_unknown_fields=False
    )
    assert deprecated_settings(istio) == []
    (envoy,) = [
        m for _, m in messages(bootstrap()) if isinstance(m, ext_proc_pb2.ExternalProcessor)
    ]
    assert istio.processing_mode == envoy.processing_mode
    assert (istio.failure_mode_allow, istio.allow_mode_override) == (True, False)
    assert istio.message_timeout == envoy.message_timeout


def _http_filters() -> list[Message]:
    (manager,) = [
        message
        for _, message in messages(bootstrap())
        if isinstance(message, http_connection_manager_pb2.HttpConnectionManager)
    ]
    return [unpacked(http_filter.typed_config) for http_filter in manager.http_filters]


def _first(filters: list[Message], kind: type[Message]) -> int:
    return next(index for index, message in enumerate(filters) if isinstance(message, kind))


def test_client_copies_of_the_identity_headers_are_removed_before_anything_reads_them() -> None:
    """``--identity headers``: the webhook trusts x-budget-tenant/user/tier/feature, so
    the gateway must be the only one to set them. The example drops every client copy
    first, then sets them from a verified JWT's claims, and only then asks ext_authz."""
    filters = _http_filters()
    strip = _first(filters, header_mutation_pb2.HeaderMutation)
    verify = _first(filters, jwt_authn_pb2.JwtAuthentication)
    check = _first(filters, ext_authz_pb2.ExtAuthz)
    settle = _first(filters, ext_proc_pb2.ExternalProcessor)
    assert strip == 0  # before every other filter
    assert strip < verify < check < settle

    stripper = filters[strip]
    assert isinstance(stripper, header_mutation_pb2.HeaderMutation)
    removed = {mutation.remove for mutation in stripper.mutations.request_mutations}
    identity = set(IdentitySettings().identity_headers)
    assert identity <= removed
    assert {HEADER_REQUEST_ID, HEADER_MODEL_OVERRIDE} <= removed  # what ext_proc reads

    verifier = filters[verify]
    assert isinstance(verifier, jwt_authn_pb2.JwtAuthentication)
    (provider,) = verifier.providers.values()
    assert {claim.header_name for claim in provider.claim_to_headers} == identity
    assert provider.issuer and list(provider.audiences) and not provider.forward
    (rule,) = verifier.rules
    assert rule.match.prefix == "/"  # every request must carry a verified token
    assert rule.requires.provider_name in verifier.providers

    config = filters[check]
    assert isinstance(config, ext_authz_pb2.ExtAuthz)
    sent = {pattern.exact for pattern in config.allowed_headers.patterns}
    assert identity <= sent  # what the webhook reads is what the gateway set


def test_no_route_opts_out_of_the_stripping_or_sets_identity_itself() -> None:
    protected = {"envoy.filters.http.header_mutation", "envoy.filters.http.jwt_authn"}
    identity = set(IdentitySettings().identity_headers)
    for _, message in messages(bootstrap()):
        if not isinstance(message, route_pb2.Route | route_pb2.VirtualHost):
            continue
        assert not protected & set(message.typed_per_filter_config)
        added = {option.header.key for option in message.request_headers_to_add}
        assert not identity & added


def test_the_istio_ingress_strips_client_copies_before_it_sets_the_identity() -> None:
    documents = {
        document["kind"]: document
        for document in yaml.safe_load_all(
            (EXAMPLES / "istio" / "ingress-identity.yaml").read_text()
        )
    }
    identity = set(IdentitySettings().identity_headers)
    (patch,) = documents["EnvoyFilter"]["spec"]["configPatches"]
    assert patch["match"]["context"] == "GATEWAY"
    assert patch["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"] == (
        "envoy.filters.http.jwt_authn"
    )
    assert patch["patch"]["operation"] == "INSERT_BEFORE"  # before the claims are written
    typed = dict(patch["patch"]["value"]["typed_config"])
    assert typed.pop("@type").endswith("header_mutation.v3.HeaderMutation")
    stripper = json_format.ParseDict(
        typed, header_mutation_pb2.HeaderMutation(), ignore_unknown_fields=False
    )
    assert deprecated_settings(stripper) == []
    removed = {mutation.remove for mutation in stripper.mutations.request_mutations}
    assert identity | {HEADER_REQUEST_ID, HEADER_MODEL_OVERRIDE} <= removed

    authentication = documents["RequestAuthentication"]["spec"]
    (rule,) = authentication["jwtRules"]
    assert {claim["header"] for claim in rule["outputClaimToHeaders"]} == identity
    assert rule["issuer"] and rule["audiences"]
    (allow,) = documents["AuthorizationPolicy"]["spec"]["rules"]
    assert allow["from"][0]["source"]["requestPrincipals"] == ["*"]
    gateway = {"istio": "ingressgateway"}
    assert documents["EnvoyFilter"]["spec"]["workloadSelector"]["labels"] == gateway
    assert authentication["selector"]["matchLabels"] == gateway
    assert documents["AuthorizationPolicy"]["spec"]["selector"]["matchLabels"] == gateway
