-- A guard for an audit group committed on its writer's predictions
-- (ADR 0033, sixth amendment): the group's statements go out with its
-- commit in one exchange, and each prediction (the log's head, the claims
-- taken, the budget counts) is checked by a statement that raises unless
-- it held. The error's SQLSTATE (MDP01) is this function's own, so the
-- writer tells a prediction that did not hold from any other failure; the
-- transaction is then aborted, and its COMMIT rolls back.
CREATE FUNCTION mandate_expect(held BOOLEAN, what TEXT) RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
BEGIN
    IF held IS NOT TRUE THEN
        RAISE EXCEPTION 'not as the audit writer predicted: %', what
            USING ERRCODE = 'MDP01';
    END IF;
    RETURN TRUE;
END
$$;
