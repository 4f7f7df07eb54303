"""Imports every context's models so Base.metadata knows every table (for Alembic and for tests)."""

# Each import registers its tables on Base.metadata. Add a context's models module here when it gains tables.
from openami.billing import models as billing_models  # noqa: F401  (imported for its tables)
from openami.control import models as control_models  # noqa: F401  (imported for its tables)
from openami.headend import models as headend_models  # noqa: F401  (imported for its tables)
from openami.ledger import models as ledger_models  # noqa: F401  (imported for its tables)
from openami.notifications import models as notifications_models  # noqa: F401  (imported for its tables)
from openami.outbox import models as outbox_models  # noqa: F401  (imported for its tables)
from openami.prepayment import models as prepayment_models  # noqa: F401  (imported for its tables)
from openami.prepayment import payments_models  # noqa: F401  (imported for its tables)
from openami.prepayment import tokens_models as prepayment_tokens_models  # noqa: F401  (imported for its tables)
from openami.readings import models as readings_models  # noqa: F401  (imported for its tables)
from openami.registry import models as registry_models  # noqa: F401  (imported for its tables)
from openami.security import audit as security_audit  # noqa: F401  (imported for its tables)
from openami.security import models as security_models  # noqa: F401  (imported for its tables)
from openami.storage.base import Base

metadata = Base.metadata
