"""API errors as metav1.Status, the body every Kubernetes client parses."""


class ApiError(Exception):
    def __init__(self, code, reason, message, details=None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self):
        body = {"kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "message": self.message,
                "reason": self.reason, "code": self.code}
        if self.details:
            body["details"] = self.details
        return body


def not_found(resource, name):
    return ApiError(404, "NotFound", f'{resource} "{name}" not found',
                    {"name": name, "kind": resource})


def already_exists(resource, name):
    return ApiError(409, "AlreadyExists", f'{resource} "{name}" already exists',
                    {"name": name, "kind": resource})


def conflict(resource, name):
    return ApiError(409, "Conflict",
                    f'Operation cannot be fulfilled on {resource} "{name}": the object '
                    "has been modified; please apply your changes to the latest version "
                    "and try again", {"name": name, "kind": resource})


def invalid(kind, name, causes):
    """422 with field causes: [(field, message)], worded like the real API."""
    text = "; ".join(f"{field}: {msg}" for field, msg in causes)
    return ApiError(422, "Invalid", f'{kind} "{name}" is invalid: {text}',
                    {"name": name, "kind": kind,
                     "causes": [{"reason": "FieldValueInvalid", "message": msg,
                                 "field": field} for field, msg in causes]})


def gone(rv, oldest):
    return ApiError(410, "Expired", f"too old resource version: {rv} ({oldest})")
