from imageops.models.imageoperation import ImageOperationSpec
from imageops.models.imagesession import ImageSessionSpec
from imageops.services.effective import effective_spec


def _op(**kw: object) -> ImageOperationSpec:
    return ImageOperationSpec.model_validate({"action": "Pull", "image": "r.io/a:1", **kw})


def test_builtin_defaults_without_session() -> None:
    eff = effective_spec(_op(), None)
    assert (eff.backoff_limit, eff.timeout_seconds) == (3, 600)
    assert eff.spec.backoff_limit == 3 and eff.spec.credentials is None
    assert eff.allowed_registries == ((),)


def test_session_fills_gaps_and_operation_wins() -> None:
    session = ImageSessionSpec.model_validate(
        {
            "backoffLimit": 7,
            "timeoutSeconds": 30,
            "allowedRegistries": ["r.io"],
            "credentials": {"secretRef": {"name": "session-cred"}},
        }
    )
    eff = effective_spec(_op(timeoutSeconds=99), session, ["r.io", "other.io"])
    assert (eff.backoff_limit, eff.timeout_seconds) == (7, 99)
    assert eff.spec.credentials is not None
    assert eff.spec.credentials.secret_ref.name == "session-cred"
    assert eff.allowed_registries == (("r.io", "other.io"), ("r.io",))
    assert eff.credentials_inherited
    own = effective_spec(_op(credentials={"secretRef": {"name": "mine"}}), session)
    assert own.spec.credentials is not None and own.spec.credentials.secret_ref.name == "mine"
    assert not own.credentials_inherited
