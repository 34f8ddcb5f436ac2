"""Budgets and alerts: a limit on recorded cost per user, conversation, tag or in total, in
UTC day / month windows or all time; one `budget_warning` / `budget_exceeded` event per
budget, scope, window and threshold, however many processes see the crossing.

    store = EventStore.open(url, budgets=[Budget(limit=Decimal("5"), per="user",
                                                 window="day", warn_at=(0.8,))])
"""

from .alerts import ALERT_TYPES, BUDGET_DEFINED, BUDGET_EXCEEDED, BUDGET_REFUSED, BUDGET_WARNING
from .budget import Budget, BudgetStatus, Window, window_of
from .watcher import BudgetWatcher, check_budgets

__all__ = ["ALERT_TYPES", "BUDGET_DEFINED", "BUDGET_EXCEEDED", "BUDGET_REFUSED",
           "BUDGET_WARNING", "Budget", "BudgetStatus", "BudgetWatcher", "Window",
           "check_budgets", "window_of"]
