// What Eclipse Hono does with an X.509 client certificate when the tenant's trusted CA has an
// auth-id-template, written from Hono's sources (eclipse-hono/hono, read 2026-12-03 at
// cda9dd30): the protocol adapter takes
//   subjectDn = cert.getSubjectX500Principal().getName(X500Principal.RFC2253)
// (TenantServiceBasedX509Authentication.getCredentials) and computes the auth-id it looks the
// device up by with IdentityTemplate.apply(subjectDn) (SubjectDnCredentials.create), using the
// same JDK calls as below; the registry stores a given auth-id after
// X509CertificateCredential.fromAuthId, which rewrites it with X500Principal when it parses
// as a distinguished name.
//
// Usage: java tests/java/HonoAuthId.java TEMPLATE CERT.der...   (JDK 11+ single-file launch)
// Prints per certificate "ok<TAB>adapter auth-id<TAB>what the registry stores for it", or
// "error<TAB>why" when Hono's adapter cannot compute one (the device cannot authenticate).
import java.io.FileInputStream;
import java.security.cert.CertificateFactory;
import java.security.cert.X509Certificate;
import java.util.List;
import java.util.regex.Pattern;
import javax.naming.ldap.LdapName;
import javax.naming.ldap.Rdn;
import javax.security.auth.x500.X500Principal;

public class HonoAuthId {
    static final String[][] ATTRS = {
        {"CN", "{{subject-cn}}"}, {"OU", "{{subject-ou}}"}, {"O", "{{subject-o}}"}};

    static String apply(String template, String subjectDN) throws Exception {
        List<Rdn> rdns = new LdapName(subjectDN).getRdns();
        String result = template.replaceAll(Pattern.quote("{{subject-dn}}"),
                new X500Principal(subjectDN).getName(X500Principal.RFC2253));
        for (String[] a : ATTRS) {
            if (result.contains(a[1])) {
                String value = rdns.stream()
                        .filter(rdn -> a[0].equalsIgnoreCase(rdn.getType()))
                        .findFirst()
                        .map(Rdn::getValue)
                        .filter(String.class::isInstance)
                        .map(String.class::cast)
                        .orElse(null);
                if (value == null || value.isEmpty()) {
                    throw new IllegalArgumentException(a[0] + " is missing in the subject DN");
                }
                result = result.replaceAll(Pattern.quote(a[1]), value);
            }
        }
        return result;
    }

    static String stored(String authId) {
        try {
            return new X500Principal(authId).getName(X500Principal.RFC2253);
        } catch (IllegalArgumentException e) {
            return authId;
        }
    }

    public static void main(String[] args) throws Exception {
        CertificateFactory cf = CertificateFactory.getInstance("X.509");
        for (int i = 1; i < args.length; i++) {
            try (FileInputStream in = new FileInputStream(args[i])) {
                X509Certificate c = (X509Certificate) cf.generateCertificate(in);
                String dn = c.getSubjectX500Principal().getName(X500Principal.RFC2253);
                try {
                    String id = apply(args[0], dn);
                    System.out.println("ok\t" + id + "\t" + stored(id));
                } catch (Exception e) {
                    System.out.println("error\t" + e.getClass().getSimpleName() + ": "
                            + String.valueOf(e.getMessage()).replace('\n', ' '));
                }
            }
        }
    }
}
