"""The event-type catalogue: the providers' types from the reference documents
(Cobo WaaS 2, OKX WaaS, Cobalt, WhatsApp Business), the dispatcher's own
operational types, and any `[event_types.NAME]` tables in config. Each type has a
description and a sample payload (the `data` of an event). Tenants add their own
types through the API (store/event_types.py); those live in the database."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dispatcher.config import Config
from dispatcher.errors import ConfigError

# Letters, digits and . _ - : / ; starts with a letter or digit. No spaces, no '*'.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,99}$"
_NAME = re.compile(NAME_PATTERN)
MAX_DESCRIPTION = 1000


@dataclass(frozen=True)
class EventType:
    name: str
    description: str
    group: str  # the provider (cobo, okx, cobalt, whatsapp), dispatcher, config or tenant
    sample: Any
    source: str  # builtin, config or tenant

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "group": self.group,
                "source": self.source, "sample": self.sample}


def valid_name(name: str) -> bool:
    return bool(_NAME.match(name))


# --- Cobo WaaS 2 (seed 001): every type names its data by `data_type`. -------------

_WALLET = "f47ac10b-58cc-4372-a567-0e02b2c3d479"
_TS = 1701396866000


def _cobo_transaction(status: str, **extra: Any) -> dict[str, Any]:
    return {
        "data_type": "Transaction",
        "transaction_id": "aff0e1cb-15b2-4e1f-9b9d-a9133715986f",
        "cobo_id": "20231213122855000000000000000000",
        "request_id": "760a1955-e212-4dfb-a8d0-e66312a1a051",
        "wallet_id": _WALLET,
        "type": "Deposit",
        "status": status,
        "chain_id": "ETH",
        "token_id": "ETH_USDT",
        "asset_id": "USDT",
        "source": {"source_type": "DepositFromAddress",
                   "addresses": ["0x80c67432656d59144ceff962e8faf8926599bcf8"]},
        "destination": {"destination_type": "Address",
                        "account_output": {"address": "0x56ba2193dd79f0eeeda77df04f5060e714e38029",
                                           "amount": "1.5"}},
        "fee": {"fee_type": "EVM_EIP_1559", "token_id": "ETH", "fee_used": "0.0001"},
        "initiator_type": "External",
        "confirmed_num": 12 if status != "Submitted" else 0,
        "confirming_threshold": 15,
        "transaction_hash": "0x239861be9a4afe080c359b7fe4a1d035945ec46256b1a0f44d1267c71de8ec28",
        "created_timestamp": _TS,
        "updated_timestamp": _TS,
        **extra,
    }


def _cobo_tss(status: str) -> dict[str, Any]:
    return {"data_type": "TSSRequest", "tss_request_id": "20240711114129000132315000003970",
            "source_key_share_holder_group": {
                "key_share_holder_group_id": "a1bf161f-8b60-4f61-9c35-6434b8654437",
                "tss_key_share_group_id": "a1bf161f-8b60-4f61-9c35-6434b8654437"},
            "target_key_share_holder_group_id": "a1bf161f-8b60-4f61-9c35-6434b8654437",
            "type": "KeyGen", "status": status, "created_timestamp": _TS}


_ORG = "e3986401-4aec-480a-973d-e775a4518413"
_TRON_ADDR = "TQ3DFp8m9dJvZ2uR1kqg2xUcHXmNEuzw7f"
_MERCHANT = "M1001"


def _amount(amount: str, token: str = "TRON_USDT", chain: str = "TRON") -> dict[str, Any]:
    return {"amount": amount, "token_id": token, "chain_id": chain}


def _cobo_payment_tx(status: str, acquiring_type: str = "Order",
                     **extra: Any) -> dict[str, Any]:
    # A Payments pay-in: a deposit to the merchant's address, for an order or a top-up.
    return _cobo_transaction(status, data_type="PaymentTransaction", chain_id="TRON",
                             token_id="TRON_USDT", asset_id="USDT",
                             source={"source_type": "DepositFromAddress",
                                     "addresses": ["TXcnJ9gPBkJTFQr2BbxrT3D8wRz5JH9k8e"]},
                             destination={"destination_type": "Address",
                                          "account_output": {"address": _TRON_ADDR,
                                                             "amount": "100.00"}},
                             fee={"fee_type": "Fixed", "token_id": "TRON_TRX",
                                  "fee_used": "1.1"},
                             acquiring_type=acquiring_type, order_id="ord_7f2e", **extra)


_COBO_TOKENS = {"data_type": "Tokens", "wallet_type": "Custodial", "wallet_subtypes": ["Asset"],
                "tokens": [{"token_id": "ETH_USDT", "chain_id": "ETH", "asset_id": "USDT",
                            "symbol": "USDT", "decimal": 6}]}
_COBO_CHAINS = {"data_type": "Chains", "wallet_type": "Custodial", "wallet_subtypes": ["Asset"],
                "chains": [{"chain_id": "ETH", "symbol": "ETH", "confirming_threshold": 15}]}
_COBO_BALANCE = {"data_type": "BalanceUpdateInfo", "token_id": "ETH_USDT", "wallet_uuid": _WALLET,
                 "address": "0x56ba2193dd79f0eeeda77df04f5060e714e38029",
                 "balance": {"total": "10.5", "available": "10", "locked": "0.5"},
                 "updated_timestamp": _TS}
_COBO_LISTING = {"data_type": "TokenListing", "request_id": "tl_6c1d", "chain_id": "ETH",
                 "contract_address": "0xdac17f958d2ee523a2206206994597c13d831ec7",
                 "wallet_type": "Custodial", "wallet_subtype": "Asset", "status": "Approved"}
_WALLET_INFO = {"wallet_id": _WALLET, "wallet_type": "Custodial", "wallet_subtype": "Asset",
                "name": "Treasury", "org_id": _ORG}
_COBO_WALLET = {"data_type": "WalletInfo", "wallet": _WALLET_INFO}
_COBO_VAULT = {"data_type": "MPCVault", "vault_id": "0d7a6e4e-4a3b-4b6c-9c1e-2b1a3f6e9d21",
               "name": "Main vault", "type": "Org-Controlled", "created_timestamp": _TS}
_PAY_TIMES = {"created_timestamp": _TS, "updated_timestamp": _TS}


def _cobo_order(status: str) -> dict[str, Any]:
    return {"data_type": "PaymentOrder", "order_id": "ord_7f2e", "merchant_id": _MERCHANT,
            "token_id": "TRON_USDT", "chain_id": "TRON", "payable_amount": "100.00",
            "receive_address": _TRON_ADDR, "currency": "USD", "order_amount": "100.00",
            "fee_amount": "1.00", "exchange_rate": "1", "psp_order_code": "P20240201001",
            "merchant_order_code": "M20240201001", "status": status,
            "received_token_amount": "100.00" if status == "Completed" else "0",
            "expired_at": _TS + 1_800_000, **_PAY_TIMES}


def _cobo_order_update(status: str) -> dict[str, Any]:
    paid = status == "Completed"
    return {"data_type": "PaymentOrderUpdate", "order_id": "ord_7f2e",
            "psp_order_code": "P20240201001", "merchant_id": _MERCHANT,
            "merchant_order_code": "M20240201001", "status": status,
            "notice_type": "PaymentUpdated", "receive_address": _TRON_ADDR,
            "expired_at": _TS + 1_800_000, "requested_amount": _amount("100.00"),
            "credited_amount": _amount("100.00" if paid else "0"),
            "outstanding_amount": _amount("0" if paid else "100.00"),
            "transactions": [{"transaction_id": "aff0e1cb-15b2-4e1f-9b9d-a9133715986f",
                              "tx_hash": "0x4a1b", "amount": _amount("100.00"),
                              "source_address": "TXcnJ9gPBkJTFQr2BbxrT3D8wRz5JH9k8e",
                              "status": "Completed", "screening_mode": "CoboKyt",
                              "is_late": False, "message": None,
                              "failed_reason": None}] if paid else [],
            **_PAY_TIMES}


def _cobo_refund_update(status: str) -> dict[str, Any]:
    return {"data_type": "PaymentRefundUpdate", "refund_id": "rf_21aa", "order_id": "ord_7f2e",
            "merchant_id": _MERCHANT, "request_id": "refund-req-1", "to_address": _TRON_ADDR,
            "status": status, "requested_amount": _amount("100.00"), "tx_hash": "0x5b2c",
            "refund_type": "Merchant", "initiator": "api", "commission_fee": None,
            "failed_reason": None, **_PAY_TIMES}


def _cobo_payout(status: str) -> dict[str, Any]:
    return {"data_type": "PaymentPayout", "payout_id": "po_31bd", "request_id": "payout-req-1",
            "payout_channel": "Crypto", "status": status, **_PAY_TIMES}


def _cobo_payout_update(status: str) -> dict[str, Any]:
    return {"data_type": "PaymentPayoutUpdate", "payout_id": "po_31bd",
            "request_id": "payout-req-1", "source_account": _MERCHANT, "status": status,
            "requested_amounts": [_amount("250.00")], "failed_amounts": [],
            "requested_target": {"target_type": "Address", "address": _TRON_ADDR,
                                 "chain_id": "TRON"},
            "transactions": [{"transaction_id": "c1d2e3f4-15b2-4e1f-9b9d-a9133715986f",
                              "amount": _amount("250.00"), "tx_hash": "0x6c3d",
                              "result": "Completed", "failed_reason": None}],
            "actual_payout_amounts": [{"amount_type": "Crypto", "amount": "250.00",
                                       "token_id": "TRON_USDT", "chain_id": "TRON"}],
            "initiator": "api", "commission_fee": None, "remark": None, "failed_reason": None,
            **_PAY_TIMES}


def _cobo_bulk_send(status: str) -> dict[str, Any]:
    return {"data_type": "PaymentBulkSend", "bulk_send_id": "bs_7a10",
            "source_account": _MERCHANT, "execution_mode": "Strict", "status": status,
            **_PAY_TIMES}


def _cobo_bulk_send_item(status: str) -> dict[str, Any]:
    return {"data_type": "PaymentBulkSendItem", "bulk_send_item_id": "bsi_7a11",
            "bulk_send_id": "bs_7a10", "source_account": _MERCHANT, "token_id": "TRON_USDT",
            "receiving_address": _TRON_ADDR, "amount": "25.00", "status": status,
            "validation_status": "Validated", **_PAY_TIMES}


_BANK_ACCOUNT = {"destination_id": "d_01", "destination_name": "Acme Ltd",
                 "destination_type": "Organization", "bank_account_id": "ba_01",
                 "account_alias": "Operating", "account_number": "GB33BUKB20201555555555",
                 "swift_code": "BUKBGB22", "currency": "USD", "beneficiary_name": "Acme Ltd",
                 "beneficiary_address": "1 Main St, London", "bank_name": "Barclays",
                 "bank_address": "1 Churchill Pl, London", "bank_account_status": "Approved"}

_COBO: list[tuple[str, str, Any]] = [
    ("wallets.transaction.created",
     "A transaction was created (deposit detected or withdrawal submitted).",
     _cobo_transaction("Submitted")),
    ("wallets.transaction.updated", "A transaction's status or confirmations changed.",
     _cobo_transaction("Confirming")),
    ("wallets.transaction.failed", "A transaction failed.",
     _cobo_transaction("Failed", failed_reason="Rejected by signer Cobo TSS")),
    ("wallets.transaction.succeeded", "A transaction completed.",
     _cobo_transaction("Completed")),
    ("wallets.mpc.tss_request.created", "A TSS request (key generation, resharing) was created.",
     _cobo_tss("PendingKeyHolderConfirmation")),
    ("wallets.mpc.tss_request.updated", "A TSS request's status changed.",
     _cobo_tss("KeyGenerating")),
    ("wallets.mpc.tss_request.failed", "A TSS request failed.", _cobo_tss("Failed")),
    ("wallets.mpc.tss_request.succeeded", "A TSS request completed.", _cobo_tss("Success")),
    ("wallets.addresses.created", "Addresses were created in a wallet.",
     {"data_type": "Addresses", "addresses": [
         {"wallet_id": _WALLET, "chain_id": "ETH",
          "address": "0x56ba2193dd79f0eeeda77df04f5060e714e38029", "encoding": "ENCODING_P2PKH"}]}),
    ("wallets.created", "A wallet was created.", _COBO_WALLET),
    ("wallets.updated", "A wallet's information (such as its name) changed.",
     {**_COBO_WALLET, "wallet": {**_WALLET_INFO, "name": "Treasury (EU)"}}),
    ("wallets.token_listing.failed", "A token listing request was rejected.",
     {**_COBO_LISTING, "status": "Rejected"}),
    ("wallets.token_listing.succeeded", "A token listing request was approved.", _COBO_LISTING),
    ("mpc_vaults.created", "An MPC vault was created.", _COBO_VAULT),
    ("mpc_vaults.updated", "An MPC vault changed (its name, or a key share holder group).",
     {**_COBO_VAULT, "name": "Main vault (2026)"}),
    ("mpc_vaults.deleted", "An MPC vault was deleted.", _COBO_VAULT),
    ("organizations.updated", "The organization's information changed.",
     {"data_type": "Organization", "org_id": _ORG, "name": "Acme Treasury"}),
    ("fee_station.transaction.created", "A Fee Station (gas top-up) transaction was created.",
     _cobo_transaction("Submitted", type="Withdrawal")),
    ("fee_station.transaction.updated", "A Fee Station transaction changed.",
     _cobo_transaction("Confirming", type="Withdrawal")),
    ("fee_station.transaction.failed", "A Fee Station transaction failed.",
     _cobo_transaction("Failed", type="Withdrawal", failed_reason="Insufficient balance")),
    ("fee_station.transaction.succeeded", "A Fee Station transaction completed.",
     _cobo_transaction("Completed", type="Withdrawal")),
    ("fee_station.fiat_transaction.created",
     "A fiat transaction (a deposit or a transfer) was made to the Fee Station.",
     {"data_type": "FiatTransaction", "transaction_id": "ft_5e21", "transaction_type": "deposit",
      "amount": "500.00", "fiat_currency": "USD", "status": "Succeeded",
      "created_timestamp": _TS, "updated_timestamp": _TS}),
    ("wallet.token.enabled", "Tokens were enabled for a wallet type.", _COBO_TOKENS),
    ("wallet.chain.enabled", "Chains were enabled for a wallet type.", _COBO_CHAINS),
    ("wallet.mpc.balance.updated", "An MPC wallet address's balance changed.", _COBO_BALANCE),
    ("wallet.web3.balance.updated", "A Web3 wallet address's balance changed.", _COBO_BALANCE),
    ("wallet.token.disabled", "Tokens were disabled for a wallet type.", _COBO_TOKENS),
    ("wallet.chain.disabled", "Chains were disabled for a wallet type.", _COBO_CHAINS),
    ("token.suspended.deposit", "Deposits of a token were suspended.",
     {"data_type": "SuspendedToken", "token_ids": "ETH_USDT", "operation_type": "Deposit"}),
    ("token.suspended.withdraw", "Withdrawals of a token were suspended.",
     {"data_type": "SuspendedToken", "token_ids": "ETH_USDT", "operation_type": "Withdrawal"}),
    ("payment.transaction.created", "A payment transaction was detected.",
     _cobo_payment_tx("Confirming")),
    ("payment.transaction.late", "A payment arrived after its order expired.",
     _cobo_payment_tx("Completed")),
    ("payment.transaction.completed", "A payment transaction completed.",
     _cobo_payment_tx("Completed")),
    ("payment.transaction.held", "A payment transaction was held for review.",
     _cobo_payment_tx("PendingScreening")),
    ("payment.transaction.failed", "A payment transaction failed.",
     _cobo_payment_tx("Failed", failed_reason="Rejected by KYT screening")),
    ("payment.transaction.external.created",
     "A deposit to an external (non-Cobo) address of a merchant was detected.",
     _cobo_payment_tx("Confirming", acquiring_type="TopUp")),
    ("payment.transaction.external.completed",
     "A deposit to an external address of a merchant completed.",
     _cobo_payment_tx("Completed", acquiring_type="TopUp")),
    ("payment.transaction.settlement_network.created",
     "A settlement-network transfer was created.",
     _cobo_payment_tx("Submitted")),
    ("payment.transaction.settlement_network.completed",
     "A settlement-network transfer completed.",
     _cobo_payment_tx("Completed")),
    ("payment.account.balance.updated", "A Payments account balance changed.",
     {"data_type": "PaymentAccountBalanceUpdate", "source_account": _MERCHANT,
      "source_id": "ord_7f2e", "source_type": "OrderIn", "token_id": "TRON_USDT",
      "amount": "100.00", "amount_raw": "100000000", "balance_before": "900.00",
      "balance_before_raw": "900000000", "balance_after": "1000.00",
      "balance_after_raw": "1000000000", "flow_direction": "in", "update_time": _TS}),
    ("payment.status.updated", "A pay-in order's status changed.", _cobo_order("Completed")),
    ("payment.order.status.updated", "A pay-in order's status changed.",
     _cobo_order("Processing")),
    ("payment.order.updated", "A pay-in order changed (amounts credited, transactions).",
     _cobo_order_update("Completed")),
    ("payment.refund.status.updated", "A refund's status changed.",
     {"data_type": "PaymentRefund", "refund_id": "rf_21aa", "order_id": "ord_7f2e",
      "token_id": "TRON_USDT", "chain_id": "TRON", "amount": "100.00",
      "to_address": _TRON_ADDR, "status": "Completed"}),
    ("payment.refund.updated", "A refund changed.", _cobo_refund_update("Completed")),
    ("payment.settlement.status.updated", "A settlement's status changed.",
     {"data_type": "PaymentSettlement", "settlement_request_id": "st_9c0e",
      "request_id": "settle-req-1", "status": "Completed",
      "settlements": [{"token_id": "TRON_USDT", "chain_id": "TRON", "merchant_id": _MERCHANT,
                       "amount": "1000.00", "settled_amount": "1000.00",
                       "created_timestamp": 1701396866, "updated_timestamp": 1701396866}]}),
    ("payment.payout.status.updated", "A payout's status changed.", _cobo_payout("Completed")),
    ("payment.payout.updated", "A payout changed (transactions, amounts paid out).",
     _cobo_payout_update("Completed")),
    ("payment.bank_withdrawal.status.updated", "A bank withdrawal's status changed.",
     {"data_type": "PaymentBankWithdrawal", "bank_withdrawal_id": "bw_44f0",
      "request_id": "bw-req-1", "source_bank_account_id": "ba_01",
      "target_bank_account_id": "ba_02", "currency": "USD", "amount": "5000.00",
      "status": "Completed", "created_timestamp": _TS,
      "source_bank_account": _BANK_ACCOUNT,
      "target_bank_account": {**_BANK_ACCOUNT, "bank_account_id": "ba_02",
                              "account_alias": "Payroll"},
      "timeline": [{"status": "Pending", "timestamp": _TS},
                   {"status": "Completed", "timestamp": _TS + 3_600_000}]}),
    ("payment.subscription.status.updated",
     "A subscription's status changed (Payments; its data is a pay-in order).",
     _cobo_order("Completed")),
    ("payment.charge.status.updated",
     "A subscription charge's status changed (Payments; its data is a pay-in order).",
     _cobo_order("Completed")),
    ("payment.topup.updated", "A top-up (a payer's deposit to its address) changed.",
     {"data_type": "PaymentTopUpUpdate", "transaction_id": "aff0e1cb-15b2-4e1f-9b9d-a9133715986f",
      "merchant_id": _MERCHANT, "payer_id": "py_01", "custom_payer_id": "payer_42",
      "status": "Completed", "screening_mode": "CoboKyt", "amount": _amount("50.00"),
      "tx_hash": "0x7d4e", "topup_address": _TRON_ADDR,
      "source_address": "TXcnJ9gPBkJTFQr2BbxrT3D8wRz5JH9k8e", "message": None,
      "failed_reason": None, **_PAY_TIMES}),
    ("payment.bulk_send.status.updated", "A bulk send's status changed.",
     _cobo_bulk_send("Completed")),
    ("payment.bulk_send.updated", "A bulk send changed (items done, amounts sent).",
     {"data_type": "PaymentBulkSendUpdate", "bulk_send_id": "bs_7a10",
      "request_id": "bulk-req-1", "source_account": _MERCHANT, "execution_mode": "Strict",
      "status": "Completed", "item_count": 2, "failed_item_count": 0,
      "not_executed_item_count": 0, "requested_amounts": [_amount("50.00")],
      "completed_amounts": [_amount("50.00")], "failed_amounts": [], "description": None,
      "commission_fee": None, "failed_reason": None, **_PAY_TIMES}),
    ("payment.bulk_send.item.status.updated", "A bulk send item's status changed.",
     _cobo_bulk_send_item("Completed")),
    ("payment.bulk_send.item.updated", "A bulk send item changed.",
     {"data_type": "PaymentBulkSendItemUpdate", "bulk_send_item_id": "bsi_7a11",
      "bulk_send_id": "bs_7a10", "request_id": "bulk-req-1", "status": "Completed",
      "requested_amount": _amount("25.00"), "receiving_address": _TRON_ADDR,
      "tx_hash": "0x8e5f", "source_account": _MERCHANT, "description": None,
      "failed_reason": None, **_PAY_TIMES}),
    ("payment.address.updated", "A top-up address was assigned or changed.",
     {"data_type": "PaymentAddressUpdate", "custom_payer_id": "payer_42", "payer_id": "py_01",
      "token_id": "TRON_USDT", "chain": "TRON", "previous_address": "TPREV",
      "updated_address": "TNEW"}),
    ("compliance.disposition.status.updated",
     "A compliance disposition (refund or isolation) changed.",
     {"data_type": "ComplianceDisposition",
      "transaction_id": "aff0e1cb-15b2-4e1f-9b9d-a9133715986f",
      "disposition_type": "Refund", "disposition_status": "Refunded",
      "updated_timestamp": _TS}),
    ("compliance.kyt.screenings.status.updated",
     "A transaction's KYT screening status changed.",
     {"data_type": "ComplianceKytScreenings",
      "transaction_id": "aff0e1cb-15b2-4e1f-9b9d-a9133715986f", "transaction_type": "Deposit",
      "review_status": "Approved", "funds_status": "Normal", "updated_timestamp": _TS}),
    ("compliance.kya.screenings.status.updated",
     "An address's KYA screening status changed.",
     {"data_type": "ComplianceKyaScreenings", "screening_id": "kya_0c3b",
      "address": "0x56ba2193dd79f0eeeda77df04f5060e714e38029", "chain_id": "ETH",
      "status": "Screened", "created_timestamp": _TS, "updated_timestamp": _TS}),
]

# --- OKX Wallet-as-a-Service (seed 002) -------------------------------------------

_OKX: list[tuple[str, str, Any]] = [
    ("transaction", "OKX: a transaction touched a subscribed address on a chain.",
     {"chainIndex": "3", "blockHeight": "110637354", "blockTime": "1689214654000",
      "txHash": "0xc9c59a01a0bddcca4e2365c2283967c78e7b4742dce93df182361c0ed593c80f",
      "fromAddr": "0x80c67432656d59144ceff962e8faf8926599bcf8",
      "toAddr": "0x56ba2193dd79f0eeeda77df04f5060e714e38029", "value": "1101146000000000003",
      "fee": "21351600000000", "gasUsed": "213516", "nonce": "831889", "status": "1",
      "symbol": "ARBITRUM", "iType": "0", "logIndex": "-1"}),
    ("block", "OKX: a new block on a subscribed chain (a list of blocks).",
     [{"blockHeight": "8455400", "blockTime": "1689216050",
       "blockHash": "0xda14230da73a0ea116b1d693a9cbfaaf241eb08be25bb190a588faff7841773d",
       "preBlockHash": "0xb4bdbad327065225a44fddac74bac9f6345d3b87c651876adafc0f18ec4f41e5"}]),
]

# --- Cobalt (seed 003): workflow and connection events ----------------------------

def _cobalt_workflow(event: str, status: str) -> dict[str, Any]:
    return {"linked_account_id": "dev", "instance_id": "67d22c4330d75f3a3fa29056",
            "workflow_id": "67af37ad1d0bb61005439eaf", "event": event,
            "workflow_name": "Get Response", "status": status, "environment": "test"}


def _cobalt_connection(event: str) -> dict[str, Any]:
    return {"linked_account_id": "dev", "environment": "test", "type": "General",
            "event": event, "slug": "hubspot", "createdAt": "Tue, 07 Nov 2023 08:03:27 GMT"}


_COBALT: list[tuple[str, str, Any]] = [
    ("workflow-completed", "Cobalt: a workflow ran to completion.",
     _cobalt_workflow("Workflow Completed", "COMPLETED")),
    ("workflow-errored", "Cobalt: a workflow stopped because of an error.",
     _cobalt_workflow("Workflow Errored", "ERRORED")),
    ("connection-created", "Cobalt: a linked account connected an application.",
     _cobalt_connection("Connection Created")),
    ("connection-deleted", "Cobalt: a connection was deleted.",
     _cobalt_connection("Connection Deleted")),
    ("connection-expired", "Cobalt: a connection was removed or no longer exists.",
     _cobalt_connection("Connection Expired")),
]

# --- WhatsApp Business API (seed 004) ---------------------------------------------

_WHATSAPP: list[tuple[str, str, Any]] = [
    ("messages", "WhatsApp: an incoming message and what it contains.",
     {"contacts": [{"profile": {"name": "Kerry Fisher"}, "wa_id": "16315551234"}],
      "messages": [{"from": "16315551234", "id": "ABGGFlA5FpafAgo6EhIWGhgHEbA",
                    "timestamp": "1518694235", "type": "text", "text": {"body": "Hello"}}]}),
    ("statuses", "WhatsApp: a sent message changed status (sent, delivered, read).",
     {"statuses": [{"id": "gBEGkYiEB1VXAglK1ZEqA1YKPrU", "recipient_id": "16315555555",
                    "status": "delivered", "timestamp": "1518694700"}]}),
    ("errors", "WhatsApp: an out-of-band error in the normal operation of the client.",
     {"errors": [{"code": 1014, "title": "Internal error",
                  "details": "Upload failed on bad image"}]}),
]

# --- The dispatcher's own operational events --------------------------------------

_DISPATCHER: list[tuple[str, str, Any]] = [
    ("endpoint.paused", "An endpoint was paused (failure threshold crossed, or by hand); "
     "its deliveries are held until it is resumed.",
     {"endpoint_id": "2b0f5c3e-5d4a-4f0e-9a43-1f3c9f0a7b11", "url": "https://example.com/webhook",
      "reason": "100 failures within 604800 s", "failures_in_window": 100, "window_seconds": 604800,
      "failures_since_resume": 100, "paused_timestamp": _TS}),
    ("endpoint.failing", "An endpoint reached a share (50, 70, 90%) of a pause threshold.",
     {"endpoint_id": "2b0f5c3e-5d4a-4f0e-9a43-1f3c9f0a7b11", "url": "https://example.com/webhook",
      "threshold": "window", "failures": 50, "limit": 100, "percentage": 50,
      "window_seconds": 604800}),
    ("callback.decided", "An approval callback was decided (Approved or Denied by the "
     "callback endpoint) or Failed (retries or deadline ran out: never approved).",
     {"id": "8d3c2f1e-0b7a-4c55-9f1d-2e6b4a9c7d10", "type": "withdrawal.approve",
      "endpoint_id": "5e1a9b7c-3d2f-4e8a-b6c4-0f9d8e7a6b5c", "status": "Approved",
      "decision": "ok", "failure_reason": None, "decided_timestamp": _TS}),
]


def builtin_event_types() -> dict[str, EventType]:
    out: dict[str, EventType] = {}
    for group, entries in (("cobo", _COBO), ("okx", _OKX), ("cobalt", _COBALT),
                           ("whatsapp", _WHATSAPP), ("dispatcher", _DISPATCHER)):
        for name, description, sample in entries:
            out[name] = EventType(name, description, group, sample, "builtin")
    return out


_CONFIG_KEYS = {"description", "sample", "group"}


def _from_config(name: str, table: Mapping[str, Any]) -> EventType:
    where = f"event_types.{name}"
    if not valid_name(name):
        raise ConfigError(f"{where}: a type name is 1-100 letters, digits or . _ - : / "
                          "and starts with a letter or digit", field=where)
    unknown = sorted(set(table) - _CONFIG_KEYS)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key", field=f"{where}.{unknown[0]}")
    description = table.get("description", "")
    group = table.get("group", "config")
    for key, value in (("description", description), ("group", group)):
        if not isinstance(value, str):
            raise ConfigError(f"{where}.{key}: expected a string", field=f"{where}.{key}")
    return EventType(name, description, group, table.get("sample"), "config")


def load_catalogue(config: Config) -> dict[str, EventType]:
    """Built-in types, then config's (a config table may replace a built-in)."""
    catalogue = builtin_event_types()
    for name, table in config.event_types.items():
        catalogue[name] = _from_config(name, table)
    return dict(sorted(catalogue.items()))
