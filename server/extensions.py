"""Flask extensions, created unbound and bound in `create_app`."""

from flask_jwt_extended import JWTManager

jwt = JWTManager()
