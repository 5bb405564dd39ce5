/*
 * The smallest user of an installed libcancel: a source, a callback that
 * releases a resource, a cancel, a destroy. Exits 0 when all went as the
 * contract says.
 */
#include <cancel.h>

#include <stdio.h>

static void
release(void *arg)
{
	int *released = arg;
	(*released)++;
}

int
main(void)
{
	struct cancel_source src;
	struct cancel_callback cb = CANCEL_CALLBACK_INITIALIZER;
	int released = 0;

	cancel_source_init(&src);
	cancel_token tok = cancel_source_token(&src);
	if (!cancel_callback_register(&cb, release, &released, tok)) {
		fprintf(stderr, "consumer: register returned false\n");
		return 1;
	}
	if (cancel_token_is_canceled(tok) || !cancel_source_cancel(&src)) {
		fprintf(stderr, "consumer: cancel did not make the transition\n");
		return 1;
	}
	if (!cancel_token_is_canceled(tok) ||
	    cancel_token_reason(tok) != ECANCELED || released != 1) {
		fprintf(stderr, "consumer: after cancel: reason %d, released %d\n",
		        cancel_token_reason(tok), released);
		return 1;
	}
	int rc = cancel_source_destroy(&src);
	if (rc != 0) {
		fprintf(stderr, "consumer: destroy returned %d\n", rc);
		return 1;
	}
	printf("consumer: ok (libcancel %d.%d.%d)\n", CANCEL_VERSION_MAJOR,
	       CANCEL_VERSION_MINOR, CANCEL_VERSION_PATCH);
	return 0;
}
