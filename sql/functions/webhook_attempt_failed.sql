-- An attempt of delivery p_delivery failed (p_status_code: the answer's status, NULL
-- when none came; p_error: why). It is tried again after p_retry_in seconds, or, when
-- that is NULL (the schedule is over), marked failed. Its endpoint's run of failures
-- grows; an enabled endpoint that has now failed p_pause_failures times in a row over
-- at least p_pause_seconds is paused, and an outbox row has its owner told.
-- Returns the delivery's outcome (retrying, failed, or gone: no longer pending, as when
-- its lease ran out and another attempt was recorded first) and whether this paused it.
CREATE OR REPLACE FUNCTION webhook_attempt_failed(
    p_delivery uuid, p_status_code integer, p_error text, p_retry_in double precision,
    p_pause_failures integer, p_pause_seconds integer
) RETURNS TABLE (outcome text, paused boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_endpoint webhook_endpoints;
    v_endpoint_id uuid;
BEGIN
    UPDATE webhook_deliveries d
       SET status = CASE WHEN p_retry_in IS NULL THEN 'failed' ELSE 'pending' END,
           next_attempt_at = now() + make_interval(secs => p_retry_in),
           finished_at = CASE WHEN p_retry_in IS NULL THEN now() END,
           last_status_code = p_status_code, last_error = p_error
     WHERE d.id = p_delivery AND d.status = 'pending'
    RETURNING d.endpoint_id INTO v_endpoint_id;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'gone', false;
        RETURN;
    END IF;

    UPDATE webhook_endpoints w
       SET consecutive_failures = w.consecutive_failures + 1,
           failing_since = coalesce(w.failing_since, now())
     WHERE w.id = v_endpoint_id
    RETURNING * INTO v_endpoint;
    IF v_endpoint.status = 'enabled'
       AND v_endpoint.consecutive_failures >= p_pause_failures
       AND v_endpoint.failing_since <= now() - make_interval(secs => p_pause_seconds) THEN
        UPDATE webhook_endpoints w
           SET status = 'paused', paused_reason = 'failing', paused_at = now(),
               pause_notified_at = NULL, updated_at = now()
         WHERE w.id = v_endpoint_id
        RETURNING * INTO v_endpoint;
        INSERT INTO outbox (topic, kind, payload)
        VALUES ('webhooks', 'endpoint.paused',
                jsonb_build_object('endpoint_id', v_endpoint.id,
                                   'paused_at', v_endpoint.paused_at));
        RETURN QUERY SELECT CASE WHEN p_retry_in IS NULL THEN 'failed' ELSE 'retrying' END,
                            true;
        RETURN;
    END IF;
    RETURN QUERY SELECT CASE WHEN p_retry_in IS NULL THEN 'failed' ELSE 'retrying' END, false;
END $$;
