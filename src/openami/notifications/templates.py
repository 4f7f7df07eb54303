"""Every text a customer receives, in English and Simplified Chinese, in one place.

Plain `str.format` templates with named fields; `rules.render` fills them. Fields: `account` (the account
number), `balance` and `amount` (money with its currency, e.g. "KES 12.50"), `days` (days of credit left),
`threshold` (the customer's own threshold), `cutoff` (local time of a planned cut-off, "2026-03-02 14:00").
"""

from __future__ import annotations

from openami.notifications.interfaces import Language, Rule

# (subject, body) per rule and language.
TEMPLATES: dict[Rule, dict[Language, tuple[str, str]]] = {
    Rule.LOW_BALANCE_AMOUNT: {
        Language.ENGLISH: (
            "Low balance on account {account}",
            "Your prepaid balance on account {account} is {balance}, at or below the {threshold} you asked "
            "to be warned at. Top up soon to keep your supply on.",
        ),
        Language.SIMPLIFIED_CHINESE: (
            "账户 {account} 余额不足",
            "您的账户 {account} 预付余额为 {balance}，已低于您设置的提醒金额 {threshold}。请尽快充值，以免停电。",
        ),
    },
    Rule.LOW_BALANCE_DAYS: {
        Language.ENGLISH: (
            "About {days} days of credit left on account {account}",
            "At your recent consumption, the {balance} on account {account} lasts about {days} more days. "
            "Top up soon to keep your supply on.",
        ),
        Language.SIMPLIFIED_CHINESE: (
            "账户 {account} 余额约可用 {days} 天",
            "按您近期的用电量，账户 {account} 的余额 {balance} 约可再用 {days} 天。请尽快充值，以免停电。",
        ),
    },
    Rule.DISCONNECT_WARNING: {
        Language.ENGLISH: (
            "Supply to account {account} will be cut at {cutoff}",
            "Your balance on account {account} is {balance}. Unless you top up, your electricity will be "
            "disconnected at {cutoff}.",
        ),
        Language.SIMPLIFIED_CHINESE: (
            "账户 {account} 将于 {cutoff} 停电",
            "您的账户 {account} 余额为 {balance}。如不充值，将于 {cutoff} 停止供电。",
        ),
    },
    Rule.DISCONNECTED: {
        Language.ENGLISH: (
            "Supply to account {account} has been disconnected",
            "Your credit on account {account} ran out (balance {balance}) and your electricity has been "
            "disconnected. It is reconnected automatically as soon as you top up.",
        ),
        Language.SIMPLIFIED_CHINESE: (
            "账户 {account} 已停电",
            "您的账户 {account} 余额已用完（余额 {balance}），已停止供电。充值后将自动恢复供电。",
        ),
    },
    Rule.RECONNECTED: {
        Language.ENGLISH: (
            "Supply to account {account} is back on",
            "Your electricity on account {account} has been reconnected. Your balance is {balance}.",
        ),
        Language.SIMPLIFIED_CHINESE: (
            "账户 {account} 已恢复供电",
            "您的账户 {account} 已恢复供电。当前余额为 {balance}。",
        ),
    },
    Rule.PAYMENT_RECEIVED: {
        Language.ENGLISH: (
            "Payment of {amount} received for account {account}",
            "Thank you: we received {amount} for account {account} (payment {payment}). Your balance is now "
            "{balance}.",
        ),
        Language.SIMPLIFIED_CHINESE: (
            "账户 {account} 已收到付款 {amount}",
            "谢谢！账户 {account} 已收到付款 {amount}（付款编号 {payment}）。当前余额为 {balance}。",
        ),
    },
}
